"""The deployment path of the scripts on a tiny model: infer.py and eval.py on an exported .onnx (and eval.py on a
.mindir) agree with the checkpoint, a foreign .onnx needs --config_path, a missing onnxruntime is one line with the
install command."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

import export as export_script
from src.config import load_config
from src.factory import build_model
from src.io.checkpoint import save_weights

from ..conftest import ROOT
from ..run_scripts import run_script

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CONFIG = """
seed: 0
model: {name: deit_tiny_patch16_224, num_classes: 3, img_size: 32, patch_size: 8, embed_dim: 48, depth: 3,
        num_heads: 3}
ppt: {r: 4, layers: [1], threshold: 1e9}
data: {path: DATA, batch_size: 4, num_workers: 1}
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Config, random-weight checkpoint, a 3-class ImageFolder (val: 5 images), the .onnx and .mindir export.py
    writes from them (batch 2: the last eval batch and the third image are padded) and an .onnx copy without our
    metadata."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel

    d = tmp_path_factory.mktemp("onnx")
    rng = np.random.default_rng(0)
    for i, name in enumerate(["ant", "ant", "bee", "cat", "cat"]):
        (d / "data" / "val" / name).mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (40, 40 + 5 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(d / "data" / "val" / name / f"img{i}.png")
    (d / "cfg.yaml").write_text(CONFIG.replace("DATA", str(d / "data")))
    save_weights(build_model(load_config(d / "cfg.yaml")), d / "w.ckpt")
    try:
        export_script.main(["--config", str(d / "cfg.yaml"), "--ckpt", str(d / "w.ckpt"), "--format", "onnx",
                            "--batch-size", "2", "--out", str(d / "model")])
        export_script.main(["--config", str(d / "cfg.yaml"), "--ckpt", str(d / "w.ckpt"), "--batch-size", "2",
                            "--out", str(d / "model.mindir")])
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    model = onnx.load(str(d / "model.onnx"))
    del model.metadata_props[:]
    onnx.save(model, str(d / "foreign.onnx"))
    return d


def _images(d):
    return sorted(str(p) for p in (d / "data" / "val").rglob("*.png"))[:3]


def test_infer_on_the_onnx_file_matches_the_checkpoint(workdir, capsys):
    d = workdir
    code, from_ckpt, err = run_script(ROOT / "infer.py", ["--model", d / "w.ckpt", "--config", d / "cfg.yaml",
                                                          *_images(d)], capsys)
    assert code == 0, err
    # No config: preprocessing and the dataset (whose folders name the classes) come from the file's metadata.
    code, from_onnx, err = run_script(ROOT / "infer.py", ["--model", d / "model.onnx", *_images(d)], capsys)
    assert code == 0, err
    assert from_onnx == from_ckpt and "ant (class 0)" in from_onnx


def test_a_foreign_onnx_needs_the_config(workdir, capsys):
    d = workdir
    code, _, err = run_script(ROOT / "infer.py", ["--model", d / "foreign.onnx", *_images(d)], capsys)
    assert code == 1 and err == [f"infer.py: error: {d / 'foreign.onnx'}: the file stores no preprocessing settings "
                                 f"(not written by export.py), so the config of the exported model must give them "
                                 f"(give --config_path)"]
    code, out, err = run_script(ROOT / "infer.py", ["--model", d / "foreign.onnx", "--config", d / "cfg.yaml",
                                                    "--topk", "1", *_images(d)], capsys)
    assert code == 0 and len(out.splitlines()) == 6, err


@pytest.mark.parametrize("flag, file, name, label", [("--onnx", "model.onnx", "onnx", "ONNX"),  # the old flag
                                                      ("--model", "model.mindir", "mindir", "MindIR")])
def test_eval_on_an_exported_file_matches_the_checkpoint(workdir, capsys, tmp_path, flag, file, name, label):
    d = workdir
    reports = {}
    for kind, model in (("ckpt", ["--ckpt", d / "w.ckpt"]), (name, [flag, d / file])):
        out = tmp_path / f"{kind}.json"
        code, text, err = run_script(ROOT / "eval.py", ["--config", d / "cfg.yaml", *model, "--out", out], capsys)
        assert code == 0, err
        reports[kind] = json.loads(out.read_text())
    ckpt, exported = reports["ckpt"]["results"]["PPT"], reports[name]["results"][label]
    assert exported["num_images"] == ckpt["num_images"] == 5
    assert exported["top1"] == ckpt["top1"] and exported["top5"] == ckpt["top5"]
    assert exported["loss"] == pytest.approx(ckpt["loss"], abs=1e-5)
    assert exported["macs"] == ckpt["macs"] and exported["ppt_layers"] == []
    assert reports[name][name] == str(d / file) and f"[{label}] top-1" in text


@pytest.mark.parametrize("extra, message", [
    (["--ckpt", "w.ckpt"], "the file holds the weights; drop --ckpt"),
    (["--compare-baseline"], "the file holds the weights; drop --compare-baseline"),
])
def test_eval_onnx_refuses_weights_flags(workdir, capsys, extra, message):
    d = workdir
    code, _, err = run_script(ROOT / "eval.py", ["--config", d / "cfg.yaml", "--model", d / "model.onnx", *extra],
                              capsys)
    assert code == 1 and err == [f"eval.py: error: --model {d / 'model.onnx'}: {message}"]


@pytest.mark.parametrize("script, argv", [
    ("infer.py", ["--model", "model.onnx", "img.png"]),
    ("eval.py", ["--config", "cfg.yaml", "--model", "model.onnx"]),
    ("benchmark.py", ["--config", "config/demo.yaml", "--backend", "both"]),
])
def test_missing_onnxruntime_is_one_line_with_the_install_command(workdir, capsys, monkeypatch, script, argv):
    d = workdir
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    (d / "img.png").write_bytes((d / "data" / "val" / "ant" / "img0.png").read_bytes())
    argv = [a if a.startswith(("-", "config/", "both")) else d / a for a in argv]
    code, _, err = run_script(ROOT / script, argv, capsys)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"{script}: error: ") and "pip install -r requirements-onnx.txt" in err[0]
