"""DeiT III through every script, on a tiny model (img 32, patch 8, width 48, 4 blocks): timm-layout weights
converted by convert.py, fine-tuned by train.py from them (--ckpt_file), then evaluated, exported (MindIR and
ONNX, verified on reload), run by infer.py, visualize.py, budget.py and benchmark.py."""
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

from src.flops import count_macs_spec
from src.io.checkpoint import read_state_dict
from src.models import create_model
from src.token_reduction import PPTSetting

from ..conftest import ROOT
from ..unit.test_train import image_folder  # noqa: F401 (fixture)

NAME = "deit3_small_patch16_224"
ARCH = dict(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=3)
PPT = {"r": 4, "layers": [1], "threshold": 1e-4}
# Converting, fine-tuning and then running seven scripts, each in its own process, takes minutes.
pytestmark = pytest.mark.slow


def _script(script: str, *args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _timm_weights(path) -> dict[str, np.ndarray]:
    """Random DeiT III weights in timm's layout, with LayerScale gammas far from their 1e-6 init."""
    rng = np.random.default_rng(0)
    model = create_model(NAME, num_classes=3, **ARCH)
    state = {n: (rng.uniform(0.1, 0.9, p.shape) if ".ls" in n else 0.05 * rng.standard_normal(p.shape))
             .astype(np.float32) for n, p in model.parameters_and_names()}
    save_file(state, str(path))
    return state


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, image_folder):  # noqa: F811 (fixture)
    """(folder, config, converted checkpoint, fine-tuned checkpoint, timm state, image folder)."""
    d = tmp_path_factory.mktemp("deit3")
    state = _timm_weights(d / "timm.safetensors")
    convert = [d / "timm.safetensors", d / "converted.ckpt", "--model", NAME]
    convert += [a for k, v in ARCH.items() for a in (f"--{k}", v)]
    assert f"-> {d / 'converted.ckpt'}: {NAME} (num_classes=3, img_size=32" in _script("convert.py", *convert).stdout
    cfg = {"seed": 0, "model": dict(name=NAME, num_classes=3, **ARCH), "ppt": dict(PPT),
           "data": {"path": str(image_folder), "batch_size": 12, "num_workers": 1},
           "train": {"epochs": 1, "warmup_epochs": 0, "base_lr": 1e-3, "finetune": True, "ema": False,
                     "log_interval": 100},
           "aug": {"randaug_magnitude": 0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0}}
    config = d / "deit3.yaml"
    config.write_text(yaml.safe_dump(cfg))
    _script("train.py", "--config_path", config, "--ckpt_file", d / "converted.ckpt", "--output_dir", d / "run",
            "--no_progress", "--mode", "pynative")
    return d, config, d / "converted.ckpt", d / "run" / "best.ckpt", state, image_folder


def test_finetuning_starts_from_the_converted_weights(finetuned):
    _, _, converted, best, state, _ = finetuned
    before, after = read_state_dict(converted), read_state_dict(best)
    assert sorted(before) == sorted(state) and sorted(after) == sorted(state)
    np.testing.assert_array_equal(before["blocks.2.ls1.gamma"], state["blocks.2.ls1.gamma"])
    # one epoch of fine-tuning moved the weights, LayerScale included, but only a little
    moved = after["blocks.2.ls1.gamma"] - before["blocks.2.ls1.gamma"]
    assert 0 < np.abs(moved).max() < 0.1


def test_eval_reports_accuracy_and_deit3_macs(finetuned):
    d, config, _, best, _, _ = finetuned
    _script("eval.py", "--config_path", config, "--ckpt_file", best, "--mode", "pynative", "--out", d / "eval.json")
    result = json.loads((d / "eval.json").read_text())["results"]["PPT"]
    assert result["num_images"] == 12 and 0 <= result["top1"] <= 100
    spec = create_model(NAME, num_classes=3, **ARCH).spec
    setting = PPTSetting(r=PPT["r"], layers=tuple(PPT["layers"]), threshold=PPT["threshold"])
    assert result["macs"] == count_macs_spec(spec, 3, setting)["total"]  # LayerScale's products included


def _image(folder):
    return next((folder / "val" / "c0").iterdir())


def test_export_mindir_and_onnx_then_infer(finetuned):
    pytest.importorskip("onnxruntime", reason="needs the optional requirements-onnx.txt")
    d, config, _, best, _, images = finetuned
    image = _image(images)
    for fmt in ("MINDIR", "ONNX"):
        out = _script("export.py", "--config_path", config, "--ckpt_file", best, "--file_format", fmt,
                      "--file_name", d / "deit3").stdout
        assert "verified" in out, out
    assert "LayerNorm -> LayerNormalization" in out  # the ONNX rewrite found every GELU and LayerNorm
    from_mindir = _script("infer.py", "--model", d / "deit3.mindir", "--topk", "2", image).stdout
    from_ckpt = _script("infer.py", "--model", best, "--config_path", config, "--topk", "2", image).stdout
    assert from_mindir.splitlines()[0] == str(image) and len(from_mindir.splitlines()) == 3
    assert [line.split("%")[1] for line in from_mindir.splitlines()[1:]] == \
        [line.split("%")[1] for line in from_ckpt.splitlines()[1:]]


def test_visualize(finetuned):
    d, config, _, best, _, images = finetuned
    out = _script("visualize.py", _image(images), "--config_path", config, "--ckpt_file", best, "--out", d / "vis",
                  "--mode", "pynative").stdout
    assert "wrote 2 PNGs" in out and len(list((d / "vis").glob("*.png"))) == 2


def test_budget_and_benchmark(finetuned):
    d, config, _, best, _, images = finetuned
    out = _script("budget.py", "--config_path", config, "--ckpt_file", best, "--target", "0.8", "--data", images,
                  "--max-images", "4", "--mode", "pynative").stdout
    assert "chosen: " in out and "ppt:\n" in out
    # timing runs on random weights of the configured architecture (benchmark.py refuses a checkpoint there)
    _script("benchmark.py", "--config_path", config, "--batch-size", "2", "--warmup", "1", "--runs", "1",
            "--out", d / "bench.json")
    report = json.loads((d / "bench.json").read_text())
    assert report["macs"]["baseline"] == count_macs_spec(create_model(NAME, num_classes=3, **ARCH).spec, 3)["total"]
    assert report["results"][0]["batch_size"] == 2
