"""benchmark.py and src.benchmark on a tiny PPT model (timings are not checked, only their bookkeeping)."""
import json
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

from src import token_reduction
from src.benchmark import benchmark, plain_slice_reduction
from src.flops import count_macs_arch
from src.models import create_model
from src.models import layers

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
         "--warmup", "1", "--runs", "2", "--out", out], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert "random" in report["weights"] and "plain slice" in report["reduction_method"]
    assert "random initialisation" in proc.stdout
    assert report["host"]["cores"] >= 1 and report["warmup"] == 1 and report["runs"] == 2
    # demo.yaml shrunk: 32 px / 8 px patches -> 17 tokens, width 48, 2 blocks, 3 heads, 10 classes, r=4 at block 1.
    arch = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)
    assert report["macs"] == {"baseline": count_macs_arch(**arch)["total"],
                              "ppt": count_macs_arch(**arch, layers=[1], r=4)["total"]}
    assert report["macs_ratio"] == pytest.approx(report["macs"]["baseline"] / report["macs"]["ppt"])
    assert [e["batch_size"] for e in report["results"]] == [2, 3]
    for entry in report["results"]:
        for name in ("baseline", "ppt", "ppt_plain_slice"):
            v = entry[name]
            assert set(v) == VARIANT_KEYS and len(v["runs_seconds"]) == 2
            assert v["median_seconds"] == pytest.approx(float(np.median(v["runs_seconds"])))
            assert v["images_per_sec"] == pytest.approx(entry["batch_size"] / v["median_seconds"])
        assert entry["speedup"] == pytest.approx(entry["baseline"]["median_seconds"] / entry["ppt"]["median_seconds"])
        assert entry["speedup_best"] == pytest.approx(min(entry["baseline"]["runs_seconds"]) /
                                                      min(entry["ppt"]["runs_seconds"]))
        pairs = zip(entry["ppt"]["runs_seconds"], entry["ppt_plain_slice"]["runs_seconds"])
        assert entry["reduction_share"] == pytest.approx(float(np.median([(p - s) / p for p, s in pairs])))


def test_plain_slice_reduction_is_compiled_into_graph_mode(graph_mode):
    ms.set_seed(0)
    ppt_model = create_model(**TINY, ppt=PPT)
    sliced = create_model(**TINY, ppt=PPT)
    for p, q in zip(ppt_model.get_parameters(), sliced.get_parameters()):
        q.set_data(p.data)
    ppt_model.set_train(False)
    sliced.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32))
    with plain_slice_reduction():
        y_slice = sliced(x).asnumpy()
        ms.set_context(mode=ms.PYNATIVE_MODE)
        y_reference = sliced(x).asnumpy()  # PyNative runs the patched Python code as written
        ms.set_context(mode=ms.GRAPH_MODE)
    assert layers.prune_or_pool is token_reduction.prune_or_pool  # restored on exit
    # Compiled after the context closed, the PPT model pools; the sliced graph keeps its slice.
    y_ppt = ppt_model(x).asnumpy()
    np.testing.assert_allclose(y_slice, y_reference, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(sliced(x).asnumpy(), y_slice)
    assert np.abs(y_ppt - y_slice).max() > 1e-3


def test_plain_slice_keeps_the_first_tokens():
    x = ms.Tensor(np.arange(2 * 7 * 3, dtype=np.float32).reshape(2, 7, 3))
    size = ms.Tensor(np.ones((2, 7, 1), np.float32))
    with plain_slice_reduction():
        out, new_size, source, pooled, svar = layers.prune_or_pool(x, size, None, None, None, 3, 0.0, 1)
    np.testing.assert_array_equal(out.asnumpy(), x.asnumpy()[:, :4])
    assert new_size.shape == (2, 4, 1) and source is None
    assert not pooled.asnumpy().any() and svar.shape == (2,)


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
