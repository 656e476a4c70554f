"""visualize.py end to end on a tiny model."""

import subprocess
import sys

import numpy as np
from PIL import Image

from ..run_scripts import run_script
from ..unit.test_sweep import DEMO_CONFIG, ROOT, TINY


def _visualize(*args: str) -> subprocess.CompletedProcess:
    # --set takes every following word: images go before it
    return subprocess.run([sys.executable, str(ROOT / "visualize.py"), *args, "--config", str(DEMO_CONFIG),
                           "--set", *TINY], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_visualize_script_end_to_end(tmp_path):
    image = tmp_path / "shape.png"
    pixels = np.full((48, 48, 3), 120, np.uint8)
    pixels[12:36, 12:36] = (250, 30, 30)
    Image.fromarray(pixels).save(image)
    names = tmp_path / "names.txt"
    names.write_text("apple\napple pie\napple tree\n")
    # The tiny model's 3 classes are not the demo dataset's 10 (its data.path): the names come from the file.
    done = _visualize(str(image), "--random-weights", "--out", str(tmp_path / "vis"), "--mode", "pynative",
                      "--class_names", str(names))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == ["shape_block1.png", "shape_block2.png",
                                                                    "shape_grid.png"]
    assert "wrote 3 PNGs" in done.stdout
    assert done.stdout.startswith(f"{image}: apple") and "(class " in done.stdout
    with Image.open(tmp_path / "vis" / "shape_grid.png") as grid:
        grid.load()
        assert grid.width == 3 * 224 + 2 * 6

    refused = _visualize(str(image), "--out", str(tmp_path / "none"))
    assert refused.returncode == 1 and not (tmp_path / "none").exists()
    assert refused.stderr.strip().splitlines() == [
        "visualize.py: error: a checkpoint is required: give --ckpt_file, or --random-weights to look at an "
        "untrained model"]


def test_an_exported_file_is_refused_in_one_line(tmp_path, capsys):
    # The runtime registry tells weights from exported graphs, which return logits but no PP-block decisions.
    model = tmp_path / "m.onnx"
    code, out, err = run_script(ROOT / "visualize.py", ["--config", "c.yaml", "--ckpt", model, "--demo", "1"], capsys)
    assert (code, out) == (1, "")
    assert err == [f"visualize.py: error: --ckpt_file {model}: an exported ONNX file returns logits only; the PP "
                   f"blocks' decisions need the model's weights (.ckpt, .pth, .safetensors)"]
