"""benchmark.py end to end on a tiny PPT model in both backends: the JSON report's bookkeeping (timings are not
checked), MAC utilisation and latency, the policies' rows, and the hand-over to the sweep."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ..conftest import ROOT, macs_of

VARIANT_KEYS = {"first_call_seconds", "runs_seconds", "median_seconds", "min_seconds", "p50_seconds", "p90_seconds",
                "images_per_sec"}


TINY = ["--config", "config/demo.yaml", "--set", "model.img_size=32", "model.embed_dim=48", "model.depth=2",
        "ppt.layers=[1]", "ppt.r=4", "--warmup", "1", "--runs", "2", "--latency-runs", "3"]


def _run(out, *argv):
    proc = subprocess.run([sys.executable, "benchmark.py", *TINY, *argv, "--out", out], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(out.read_text())


def _check_entry(entry, report, names):
    runs = 3 if entry["batch_size"] == 1 else 2  # --latency-runs at batch 1
    assert len(entry["roof_runs_seconds"]) == runs
    assert entry["macs_per_second"] == pytest.approx(2048 * 1024 * 1024 / np.median(entry["roof_runs_seconds"]))
    for name in names:
        v = entry[name]
        assert set(v) == (VARIANT_KEYS | ({"speedup", "speedup_iqr"} if name != "baseline" else set())
                          | ({"mac_utilisation"} if name != "ppt_plain_slice" else set()))
        assert len(v["runs_seconds"]) == runs
        assert v["median_seconds"] == pytest.approx(float(np.median(v["runs_seconds"])))
        assert v["p90_seconds"] == pytest.approx(float(np.percentile(v["runs_seconds"], 90)))
        assert v["images_per_sec"] == pytest.approx(entry["batch_size"] / v["median_seconds"])
        if name != "ppt_plain_slice":
            assert v["mac_utilisation"] == pytest.approx(v["images_per_sec"] * report["macs"][name] /
                                                         entry["macs_per_second"])
        if name != "baseline":  # speed-ups are paired by round: baseline run i against this variant's run i
            ratios = [b / t for b, t in zip(entry["baseline"]["runs_seconds"], v["runs_seconds"])]
            assert v["speedup"] == pytest.approx(float(np.median(ratios)))
            assert v["speedup_iqr"] == pytest.approx([float(np.percentile(ratios, q)) for q in (25, 75)])
    assert (entry["speedup"], entry["speedup_iqr"]) == (entry["ppt"]["speedup"], entry["ppt"]["speedup_iqr"])
    assert entry["speedup_medians"] == pytest.approx(entry["baseline"]["median_seconds"] /
                                                     entry["ppt"]["median_seconds"])
    assert entry["speedup_best"] == pytest.approx(min(entry["baseline"]["runs_seconds"]) /
                                                  min(entry["ppt"]["runs_seconds"]))
    assert entry["bound"] == entry["ppt_plain_slice"]["speedup"]
    assert entry["ratio_to_bound"] == pytest.approx(float(np.median(
        [s / p for s, p in zip(entry["ppt_plain_slice"]["runs_seconds"], entry["ppt"]["runs_seconds"])])))
    pairs = zip(entry["ppt"]["runs_seconds"], entry["ppt_plain_slice"]["runs_seconds"])
    assert entry["reduction_share"] == pytest.approx(float(np.median([(p - s) / p for p, s in pairs])))


def test_benchmark_script_writes_json(tmp_path):
    proc, report = _run(tmp_path / "bench.json", "--batch-size", "2", "1", "--policies", "prune", "pool")
    assert "random" in report["weights"] and "plain slice" in report["reduction_method"]
    assert "random initialisation" in proc.stdout
    settings = report["settings"]
    assert report["host"]["cores"] >= 1 and settings["threads"] == report["host"]["cores"]
    assert (settings["warmup"], settings["runs"], settings["latency_runs"]) == (1, 2, 3)
    assert settings["batch_sizes"] == [2, 1]
    assert settings["versions"]["mindspore"] and settings["policies"] == ["prune", "pool"] and settings["seed"] == 0
    # demo.yaml shrunk: 32 px / 8 px patches -> 17 tokens, width 48, 2 blocks, 3 heads, 10 classes, r=4 at block 1.
    arch = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)
    assert report["macs"] == {"baseline": macs_of(**arch)["total"], "ppt": macs_of(**arch, layers=[1], r=4)["total"],
                              **{f"policy_{p}": macs_of(**arch, layers=[1], r=4, policy=p)["total"]
                                 for p in ("prune", "pool")}}
    assert "policy prune" in proc.stdout and "policy pool" in proc.stdout
    assert report["macs_ratio"] == pytest.approx(report["macs"]["baseline"] / report["macs"]["ppt"])
    assert [(e["backend"], e["batch_size"]) for e in report["results"]] == [("mindspore", 2), ("mindspore", 1)]
    for entry in report["results"]:
        _check_entry(entry, report, ("baseline", "ppt", "ppt_plain_slice", "policy_prune", "policy_pool"))
    assert "MAC util" in proc.stdout and "p90" in proc.stdout and "ratio/bound" in proc.stdout


def test_benchmark_script_times_onnxruntime_and_mindspore_in_one_run(tmp_path):
    """--backend both: the same models exported to ONNX, timed in the same rounds, each against its own roof."""
    pytest.importorskip("onnxruntime", reason="needs the optional requirements-onnx.txt")
    pytest.importorskip("onnx", reason="needs the optional requirements-onnx.txt")
    proc, report = _run(tmp_path / "bench.json", "--batch-size", "1", "--backend", "both")
    assert report["settings"]["backends"] == ["mindspore", "onnxruntime"]
    assert [(e["backend"], e["batch_size"]) for e in report["results"]] == [("mindspore", 1), ("onnxruntime", 1)]
    for entry in report["results"]:
        _check_entry(entry, report, ("baseline", "ppt", "ppt_plain_slice"))
    assert "onnxruntime" in proc.stdout


def test_benchmark_script_runs_the_sweep(tmp_path):
    """benchmark.py --sweep hands over to src.analysis.sweep: CSV, JSON and PNG with the baseline and each r."""
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

