"""benchmark.py and src.benchmark on a tiny PPT model (timings are not checked, only their bookkeeping)."""
import json
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from src.benchmark import benchmark
from src.models import create_model

from .conftest import macs_of

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(name="deit_tiny_patch16_224", num_classes=5, img_size=32, patch_size=8, embed_dim=48, depth=3,
            num_heads=3)
PPT = {"r": 4, "layers": [1], "threshold": 1e9, "prop_attn": True}
VARIANT_KEYS = {"first_call_seconds", "runs_seconds", "median_seconds", "min_seconds", "images_per_sec"}


def test_benchmark_script_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "benchmark.py", "--config", "config/demo.yaml", "--set", "model.img_size=32",
         "model.embed_dim=48", "model.depth=2", "ppt.layers=[1]", "ppt.r=4", "--batch-size", "2", "3",
         "--warmup", "1", "--runs", "2", "--policies", "prune", "pool", "--out", out], cwd=ROOT, capture_output=True,
        text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert "random" in report["weights"] and "plain slice" in report["reduction_method"]
    assert "random initialisation" in proc.stdout
    assert report["host"]["cores"] >= 1 and report["warmup"] == 1 and report["runs"] == 2
    # demo.yaml shrunk: 32 px / 8 px patches -> 17 tokens, width 48, 2 blocks, 3 heads, 10 classes, r=4 at block 1.
    arch = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)
    assert report["macs"] == {"baseline": macs_of(**arch)["total"], "ppt": macs_of(**arch, layers=[1], r=4)["total"],
                              **{f"policy_{p}": macs_of(**arch, layers=[1], r=4, policy=p)["total"]
                                 for p in ("prune", "pool")}}
    assert "policy prune" in proc.stdout and "policy pool" in proc.stdout
    assert report["macs_ratio"] == pytest.approx(report["macs"]["baseline"] / report["macs"]["ppt"])
    assert [e["batch_size"] for e in report["results"]] == [2, 3]
    for entry in report["results"]:
        for name in ("baseline", "ppt", "ppt_plain_slice", "policy_prune", "policy_pool"):
            v = entry[name]
            assert set(v) == VARIANT_KEYS | ({"speedup"} if name != "baseline" else set())
            assert len(v["runs_seconds"]) == 2
            assert v["median_seconds"] == pytest.approx(float(np.median(v["runs_seconds"])))
            assert v["images_per_sec"] == pytest.approx(entry["batch_size"] / v["median_seconds"])
        assert entry["speedup"] == pytest.approx(entry["baseline"]["median_seconds"] / entry["ppt"]["median_seconds"])
        assert entry["speedup_best"] == pytest.approx(min(entry["baseline"]["runs_seconds"]) /
                                                      min(entry["ppt"]["runs_seconds"]))
        pairs = zip(entry["ppt"]["runs_seconds"], entry["ppt_plain_slice"]["runs_seconds"])
        assert entry["reduction_share"] == pytest.approx(float(np.median([(p - s) / p for p, s in pairs])))


def test_keep_first_policy_is_the_timing_baseline(graph_mode):
    """The plain slice is a registered policy: compiled into graph mode, it keeps the first N - r tokens."""
    ms.set_seed(0)
    ppt_model = create_model(**TINY, ppt=PPT)
    sliced = create_model(**TINY, ppt=dict(PPT, policy="keep_first"))
    for p, q in zip(ppt_model.get_parameters(), sliced.get_parameters()):
        q.set_data(p.data)
    ppt_model.set_train(False)
    sliced.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32))
    y_slice, y_ppt = sliced(x).asnumpy(), ppt_model(x).asnumpy()
    # By hand: the same blocks, with block 1's MLP on its first 13 of 17 tokens.
    h = sliced._embed(x)
    size = ms.ops.ones((2, 17, 1), ms.float32)
    for i, blk in enumerate(sliced.blocks):
        if i == 1:
            out = blk.attn(blk.norm1(h), size)[0]
            h = h + out
            h = h[:, :13]
            h = h + blk.mlp(blk.norm2(h))
        else:
            h = blk(h, size[:, :h.shape[1]])[0]
    expected = sliced.forward_head(sliced.norm(h)).asnumpy()
    np.testing.assert_allclose(y_slice, expected, rtol=1e-4, atol=1e-5)
    assert np.abs(y_ppt - y_slice).max() > 1e-3


@pytest.mark.parametrize("kwargs, message", [
    (dict(model_kwargs=dict(TINY, ppt=None), batch_sizes=[2]), "ppt.enabled: false"),
    (dict(model_kwargs=dict(TINY, ppt=PPT), batch_sizes=[0]), "batch sizes must be ints >= 1"),
    (dict(model_kwargs=dict(TINY, ppt=PPT), batch_sizes=[2], warmup=0), "warmup and runs must be >= 1"),
])
def test_benchmark_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        benchmark(**kwargs, log=None)


def test_benchmark_script_runs_the_sweep(tmp_path):
    """benchmark.py --sweep hands over to src.sweep: CSV, JSON and PNG with the baseline and each r."""
    prefix = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "benchmark.py", "--config", "config/demo.yaml", "--set", "model.img_size=32",
         "model.embed_dim=48", "model.depth=2", "ppt.layers=[1]", "--sweep", "2", "4", "--sweep-batch-size", "2",
         "--sweep-runs", "1", "--sweep-out", str(prefix)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(prefix.with_suffix(".json").read_text())["rows"]
    assert [row["r"] for row in rows] == [[], [2], [4]]  # baseline first, then r per PP layer
    assert prefix.with_suffix(".csv").is_file() and prefix.with_suffix(".png").stat().st_size > 0
    stray = subprocess.run([sys.executable, "benchmark.py", "--config", "config/demo.yaml", "--ckpt", "x.ckpt"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert stray.returncode != 0 and "only used with --sweep" in stray.stderr
