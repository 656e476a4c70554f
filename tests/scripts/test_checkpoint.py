"""convert.py end to end: architectures inferred from the shapes, overrides, and clean failures before writing."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from src.io.checkpoint import (
    read_checkpoint_meta,
    read_state_dict,
)
from src.models import create_model

from ..conftest import MINI_ARCH, ROOT
from ..torch_zip import state_to_pth
from ..unit.test_checkpoint import MINI_PTH, _assert_same  # noqa: F401 (fixtures, helpers)


def _convert(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "convert.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_convert_infers_a_registered_arch(tmp_path):
    model = create_model("deit_tiny_distilled_patch16_224", num_classes=7)
    rng = np.random.default_rng(0)
    state = {name: rng.standard_normal(p.shape).astype(np.float32) for name, p in model.parameters_and_names()}
    state_to_pth(tmp_path / "src.pth", state)
    result = _convert("src.pth", "out.ckpt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [
        f"converted src.pth ({len(state)} tensors) -> out.ckpt: deit_tiny_distilled_patch16_224 (num_classes=7)"]
    _assert_same(read_state_dict(tmp_path / "out.ckpt"), state)
    assert (tmp_path / "out.ckpt").read_bytes()[-17:-10] == b"crc_num"
    assert read_checkpoint_meta(tmp_path / "out.ckpt") == {
        "model": "deit_tiny_distilled_patch16_224", "num_classes": 7, "source": "src.pth"}


def test_convert_mini_with_overrides_and_class_names(tmp_path):
    flags = [f"--{k}={v}" for k, v in MINI_ARCH.items()]
    (tmp_path / "names.txt").write_text("".join(f"shape {i}\n" for i in range(10)))
    result = _convert(str(MINI_PTH), "mini.ckpt", "--model_name", "deit_tiny_patch16_224", *flags,
                      "--class_names", "names.txt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("; 10 class names from names.txt")
    _assert_same(read_state_dict(tmp_path / "mini.ckpt"), read_state_dict(MINI_PTH))
    meta = read_checkpoint_meta(tmp_path / "mini.ckpt")
    assert meta["num_classes"] == 10 and meta["class_names"] == [f"shape {i}" for i in range(10)]


def test_convert_fails_cleanly_before_writing(tmp_path):
    result = _convert(str(MINI_PTH), "out.ckpt", "--model", "deit_tiny_patch16_224", cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if not line.startswith("[WARNING]")]
    assert len(errors) == 1 and errors[0].startswith("convert.py: error: ") and "does not match the model" in errors[0]
    assert os.listdir(tmp_path) == []

