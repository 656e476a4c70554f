"""infer.py end to end: checkpoint and MindIR agree on the top-5, the MindIR names the classes it was exported
with, a mismatching config and a checkpoint without config are refused, class-name problems are one line."""

import numpy as np
import pytest
from PIL import Image

import export as export_script
import infer as infer_script
from src.config import load_config
from src.factory import build_model
from src.io.checkpoint import save_weights

from ..conftest import ROOT
from ..run_scripts import run_script

CONFIG = """
model: {name: deit_tiny_patch16_224, num_classes: 10, img_size: 32, patch_size: 8, embed_dim: 48, depth: 3,
        num_heads: 3}
ppt: {r: 4, layers: [1], threshold: 1e9}
data: {path: /nonexistent/dataset, batch_size: 8, crop_pct: 0.875, interpolation: bicubic}
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Config, random-weight checkpoint (no class names stored), class names, three PNGs of different sizes, and
    the MindIR exported by export.py with those names (batch 2: the third image goes into a padded chunk)."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel

    d = tmp_path_factory.mktemp("infer")
    (d / "cfg.yaml").write_text(CONFIG)
    save_weights(build_model(load_config(d / "cfg.yaml")), d / "w.ckpt")
    (d / "names.txt").write_text("".join(f"shape{i}\n" for i in range(10)))
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 50), (64, 37), (90, 90)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    try:
        export_script.main(["--config", str(d / "cfg.yaml"), "--ckpt", str(d / "w.ckpt"), "--format", "mindir",
                            "--batch-size", "2", "--out", str(d / "model"), "--class_names", str(d / "names.txt")])
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    return d


def _images(d):
    return [str(d / f"img{i}.png") for i in range(3)]


def test_checkpoint_and_mindir_give_the_same_top5(workdir, capsys, graph_mode):
    d = workdir
    capsys.readouterr()
    infer_script.main(["--model", str(d / "w.ckpt"), "--config", str(d / "cfg.yaml"),
                       "--class_names", str(d / "names.txt"), *_images(d)])
    from_ckpt = capsys.readouterr().out
    # No config, no names file: preprocessing and class names come from what export.py stored in the MindIR.
    infer_script.main(["--model", str(d / "model.mindir"), *_images(d)])
    from_mindir = capsys.readouterr().out
    assert from_ckpt == from_mindir
    lines = from_mindir.splitlines()
    assert len(lines) == 3 * 6 and lines[0] == _images(d)[0]
    assert lines[1].startswith("  1. ") and "shape" in lines[1] and "(class " in lines[1]


def test_mindir_against_a_different_config_is_refused(workdir, graph_mode):
    d = workdir
    with pytest.raises(ValueError, match=r"config's model \(64 px, 10 classes\) is not the one exported.*32 px"):
        infer_script.main(["--model", str(d / "model.mindir"), "--config", str(d / "cfg.yaml"),
                           "--set", "model.img_size=64", "--", *_images(d)])


def test_checkpoint_needs_a_config(workdir):
    with pytest.raises(ValueError, match="--config_path is required to build the model of a checkpoint"):
        infer_script.main(["--model", str(workdir / "w.ckpt"), *_images(workdir)])



def test_a_names_file_that_disagrees_with_the_stored_names_wins_with_one_warning(workdir, capsys):
    d = workdir
    (d / "other.txt").write_text("".join(f"kind{i}\n" for i in range(10)))
    code, out, err = run_script(ROOT / "infer.py", ["--model", d / "model.mindir", "--class_names", d / "other.txt",
                                                    "--topk", "1", *_images(d)], capsys)
    assert code == 0 and "kind" in out and "shape" not in out
    assert err == [f"infer.py: warning: {d / 'other.txt'}: the class names differ from those stored in "
                   f"{d / 'model.mindir'} (class 0 is 'kind0' vs 'shape0'); using {d / 'other.txt'}'s"]


@pytest.mark.parametrize("case", ["none", "count", "twice"])
def test_class_name_problems_are_one_line(workdir, capsys, case):
    d = workdir
    names = d / f"{case}.txt"
    names.write_text({"none": "", "count": "a\nb\n", "twice": "".join(f"n{i % 9}\n" for i in range(10))}[case])
    flag = [] if case == "none" else ["--class_names", names]
    code, out, err = run_script(ROOT / "infer.py", ["--model", d / "w.ckpt", "--config", d / "cfg.yaml", *flag,
                                                    *_images(d)], capsys)
    expected = {
        # w.ckpt was written without names, its dataset is not here, and it has 10 classes
        "none": f"{d / 'w.ckpt'}: nothing names its 10 classes: it stores no class names, its dataset "
                f"/nonexistent/dataset has no class folders on this machine, and it is not an ImageNet-1k model "
                f"(1000 classes) (give --class_names FILE)",
        "count": f"{names}: 2 class names, but the model has 10 classes",
        "twice": f"{names}: class name 'n0' is given twice (line 1 and line 10); each class needs its own name",
    }[case]
    assert (code, out, err) == (1, "", [f"infer.py: error: {expected}"])
