"""The scripts on timm's ViT (vit_small_patch16_224, shrunk with overrides) from its shipped config: convert.py from
a timm .safetensors, eval.py, infer.py, visualize.py, budget.py, benchmark.py, export.py (MindIR and ONNX, verified
on reload) and train.py fine-tuning from the converted weights; export of mindcv's ViT (tanh GELU) too."""
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from src.io.checkpoint import read_checkpoint_meta, read_state_dict, save_weights
from src.models import create_model

from ..conftest import ROOT
from ..run_scripts import run_script
from ..unit.test_export import _onnx_available
from ..unit.test_sweep import make_folder

ARCH = dict(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=3)


def _overrides(data) -> list[str]:
    return [*(f"model.{k}={v}" for k, v in ARCH.items()), "model.num_classes=3", "ppt.r=4", "ppt.layers=[1,2]",
            "data.batch_size=4", "data.num_workers=1", f"data.path={data}", "data.repeated_aug=1", "train.epochs=1",
            "train.warmup_epochs=0", "train.ema=false", "train.log_interval=1"]


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """A timm-layout .safetensors of the shrunk ViT-S converted to .ckpt by convert.py, its config and data."""
    d = tmp_path_factory.mktemp("vit")
    data = make_folder(d / "data")
    shutil.copytree(data / "val", data / "train")
    model = create_model("vit_small_patch16_224", num_classes=3, **ARCH)
    rng = np.random.default_rng(0)
    state = {name: rng.normal(0, 0.05, p.shape).astype(np.float32) for name, p in model.parameters_and_names()}
    save_file(state, str(d / "vit_small.safetensors"))
    return {"dir": d, "data": data, "state": state, "config": ROOT / "config" / "vit_small_patch16_224.yaml",
            "set": _overrides(data), "image": next((data / "val" / "a").iterdir())}


def _convert(vit, capsys):
    d = vit["dir"]
    argv = [d / "vit_small.safetensors", d / "vit.ckpt", "--model", "vit_small_patch16_224",
            *(f"--{k}={v}" for k, v in ARCH.items())]
    code, out, err = run_script(ROOT / "convert.py", argv, capsys)
    assert code == 0, err
    return out


def test_convert_eval_infer_budget(vit, capsys):
    d = vit["dir"]
    assert ": vit_small_patch16_224 (num_classes=3, img_size=32, patch_size=8, embed_dim=48, depth=4" in _convert(
        vit, capsys)
    assert read_checkpoint_meta(d / "vit.ckpt")["model"] == "vit_small_patch16_224"
    assert set(read_state_dict(d / "vit.ckpt")) == set(vit["state"])
    flags = ["--config", vit["config"], "--set", *vit["set"]]

    code, _, err = run_script(ROOT / "eval.py", [*flags, "--ckpt_file", d / "vit.ckpt", "--compare-baseline",
                                                 "--mode", "pynative", "--out", d / "eval.json"], capsys)
    assert code == 0, err
    report = json.loads((d / "eval.json").read_text())
    assert list(report["results"]) == ["baseline", "PPT"] and report["num_images"] == 9
    assert report["results"]["PPT"]["macs"] < report["results"]["baseline"]["macs"]

    code, out, err = run_script(ROOT / "infer.py", ["--model", d / "vit.ckpt", *flags, "--mode", "pynative", "--topk",
                                                    "2", "--", vit["image"]], capsys)
    assert code == 0 and out.startswith(str(vit["image"])), err

    code, out, err = run_script(ROOT / "budget.py", [*flags, "--target", "0.8"], capsys)
    assert code == 0 and "vit_small_patch16_224: baseline" in out and "\nppt:\n" in out, err


@pytest.mark.slow
def test_visualize_and_benchmark(vit, capsys):
    d = vit["dir"]
    _convert(vit, capsys)
    flags = ["--config", vit["config"], "--set", *vit["set"]]
    code, out, err = run_script(ROOT / "visualize.py", [*flags, "--ckpt_file", d / "vit.ckpt", "--out", d / "vis",
                                                        "--mode", "pynative", vit["image"]], capsys)
    assert code == 0 and "wrote 3 PNGs" in out, err
    with Image.open(d / "vis" / f"{vit['image'].stem}_grid.png") as grid:
        assert grid.format == "PNG"
    # timing needs no trained weights (benchmark.py refuses --ckpt_file without --sweep-data)
    code, out, err = run_script(ROOT / "benchmark.py", [*flags, "--batch-size", "2", "--warmup", "1", "--runs", "1",
                                                        "--out", d / "bench.json"], capsys)
    assert code == 0, err
    assert json.loads((d / "bench.json").read_text())["results"][0]["batch_size"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vit_small_patch16_224", "vit_b_16_224"])
def test_export_mindir_and_onnx_verified_then_infer(vit, capsys, tmp_path, name):
    """Both families: timm's (exact GELU, rewritten to Erf in ONNX) and mindcv's (tanh GELU)."""
    save_weights(create_model(name, num_classes=3, **ARCH), tmp_path / "w.ckpt")
    flags = ["--config", ROOT / "config" / f"{name}.yaml", "--set", *vit["set"], "--ckpt_file", tmp_path / "w.ckpt",
             "--batch_size", "1"]
    formats = ["MINDIR"] + (["ONNX"] if _onnx_available() else [])
    for fmt in formats:
        code, out, err = run_script(ROOT / "export.py", [*flags, "--file_format", fmt, "--file_name", tmp_path / "m"],
                                    capsys)
        assert code == 0 and "verified: max |logits - Cell logits|" in out, err
    code, out, err = run_script(ROOT / "infer.py", ["--model", tmp_path / "m.mindir", "--", vit["image"]], capsys)
    assert code == 0 and out.startswith(str(vit["image"])), err


@pytest.mark.slow
def test_train_fine_tunes_from_the_converted_weights(vit, capsys):
    d = vit["dir"]
    _convert(vit, capsys)
    code, out, err = run_script(ROOT / "train.py", ["--config", vit["config"], "--set", *vit["set"], "--ckpt_file",
                                                    d / "vit.ckpt", "--output_dir", d / "train", "--mode", "pynative",
                                                    "--no_progress"], capsys)
    assert code == 0, err
    assert f"weights: {d / 'vit.ckpt'}" in out
    trained = read_state_dict(d / "train" / "best.ckpt")
    assert set(trained) == set(vit["state"])
    assert not np.array_equal(trained["head.weight"], read_state_dict(d / "vit.ckpt")["head.weight"])
