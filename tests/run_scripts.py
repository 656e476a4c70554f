"""Helpers for tests of the top-level scripts' error handling: run a script's ``main`` the way its ``__main__``
block does (through ``src.cli.run``) in this process, and a tiny model config with random weights."""
import runpy
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import mindspore as ms
import pytest

from src.cli import run
from src.config import load_config
from src.factory import build_model
from src.io.checkpoint import save_weights

TINY_CONFIG = """
model: {name: deit_tiny_patch16_224, num_classes: 3, img_size: 32, patch_size: 8, embed_dim: 48, depth: 3,
        num_heads: 3}
ppt: {r: 4, layers: [1], threshold: 1e9}
data: {path: DATA, batch_size: 4, num_workers: 1}
"""


def run_main(main: Callable[[], object], prog: str, capsys: pytest.CaptureFixture) -> tuple[int, str, list[str]]:
    """``(exit code, stdout, stderr lines without MindSpore's [WARNING] lines)`` of ``run(main, prog)``."""
    capsys.readouterr()
    try:
        run(main, prog)
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if not line.startswith("[WARNING]")]


def run_script(script: Path, argv: Sequence[str], capsys: pytest.CaptureFixture) -> tuple[int, str, list[str]]:
    """Like :func:`run_main`, for ``python script argv...`` run in this process (its ``__main__`` block)."""
    saved = sys.argv
    sys.argv = [script.name, *map(str, argv)]
    try:
        return run_main(lambda: runpy.run_path(str(script), run_name="__main__"), script.name, capsys)
    finally:
        sys.argv = saved


def tiny_model_files(folder: Path, data: str = "/nonexistent") -> tuple[Path, Path, Path]:
    """``(config, random-weight checkpoint, class names file)`` of a 3-class 32 px DeiT."""
    config = folder / "tiny.yaml"
    config.write_text(TINY_CONFIG.replace("DATA", data))
    ckpt = folder / "tiny.ckpt"
    save_weights(build_model(load_config(config)), ckpt)
    names = folder / "names.txt"
    names.write_text("ant\nbee\ncat\n")
    return config, ckpt, names
