"""Inference throughput and latency of the baseline DeiT against PPT, how close they run to the machine's matmul speed,
and the share of PPT's time its token reduction takes, in MindSpore and/or onnxruntime.

Three models with the same (random) weights run on the same random batch:

- ``baseline``: the configured DeiT without PPT;
- ``ppt``: the configured PPT model;
- ``ppt_plain_slice``: the same model with the ``keep_first`` policy (``src.token_reduction``): its PP
  blocks keep their first ``N - r`` tokens with a plain slice instead of scoring, sorting, matching and
  pooling. Token counts, and so the cost of every other operation, are the same as in ``ppt``; the time
  difference is what the reduction itself costs. Its outputs are meaningless.

Timing: the first call of each model (which compiles the graph in graph mode) and the further warm-up calls are not
timed; then the models are timed in interleaved rounds (baseline, ppt, ppt_plain_slice, then the reverse order in the
next round), each call synchronised by copying the logits to the host and preceded by a short pause
(``SETTLE_SECONDS``) so that the previous model's idle threads have stopped spinning, so a change of machine load
affects all three alike. With the ``onnxruntime`` backend the same Cells (same weights) are exported to temporary
ONNX files (:func:`src.deploy.export_model`, verified against the Cells) and their sessions take part in the same
rounds. Every round also times one large matmul in each backend (the roof: MindSpore's in the current mode,
onnxruntime's on its CPU provider), so MAC utilisation = images/s x MACs per image / roof rate compares the model
with what the same backend reaches on its best-case operation, under the same load. Reported: median seconds per
batch, images/s, speed-up = the median (and interquartile range) over rounds of baseline / ppt time, the bound (the
same for the plain slice) and PPT's ratio to it (plain slice / ppt time per round), the MACs ratio (the ideal
speed-up, :func:`src.flops.count_macs`), and the reduction's share = median over rounds of ``(ppt - ppt_plain_slice) /
ppt``, p50/p90 latency per call (the point at batch 1); and the speed-up as the ratio of the medians and from each
model's fastest run, with the reduction's share from the fastest runs, other estimates on a shared CPU. Random
weights are enough: shapes are static and both reduction branches run for every image, so PPT's cost does not depend
on the weights or the input.
"""
import functools
import importlib.metadata
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..deploy import export_model, get_runtime
from ..deploy.onnx_runtime import MATMUL_SIZE, mac_utilisation, matmul_roof
from ..flops import count_macs
from ..io.checkpoint import load_state_dict
from ..models import VisionTransformer, create_model
from ..timing import fix_cpu_threads, timed_call, usable_cores
from ..token_reduction import PPTSetting

__all__ = ["BACKENDS", "REDUCTION_METHOD", "benchmark", "format_benchmark", "host_info", "runtime_versions"]

BACKENDS = ("mindspore", "onnxruntime")
# Pause before every timed call: onnxruntime's worker threads (and MindSpore's) spin for a while after a call
# returns, and on a 2-core machine the previous model's spinning threads take the CPU from the next call
# (measured at batch 1: every onnxruntime session 20-40 % slower interleaved than alone; with this pause the
# interleaved times equal those of a session timed alone).
SETTLE_SECONDS = 0.05

REDUCTION_METHOD = ("PPT model timed against the same model with the keep_first policy, whose PP blocks keep "
                    "their first N-r tokens with a plain slice (same token counts, no scoring/sorting/pooling)")


def host_info() -> dict[str, Any]:
    """CPU model name (from /proc/cpuinfo where available), usable cores and the 1-minute load average."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass  # not Linux: the model name is informational only
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": usable_cores(), "load_avg_1min": load}


def runtime_versions() -> dict[str, str | None]:
    """Versions of what runs the models (None: not installed)."""
    versions = {"python": platform.python_version(), "mindspore": ms.__version__, "numpy": np.__version__}
    for name in ("onnxruntime", "onnx"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _variants(model_kwargs: dict[str, Any], policies: Sequence[str]) -> dict[str, VisionTransformer]:
    """The models to time, all with the PPT model's (random) weights, in evaluation mode."""
    setting = PPTSetting.coerce(model_kwargs["ppt"])
    settings = {"baseline": None, "ppt": setting, "ppt_plain_slice": setting.replace(policy="keep_first")}
    settings.update({f"policy_{p}": setting.replace(policy=p) for p in policies})
    models = {name: create_model(**dict(model_kwargs, ppt=s)) for name, s in settings.items()}
    weights = {name: param.asnumpy() for name, param in models["ppt"].parameters_and_names()}
    for name, model in models.items():
        if name != "ppt":  # PPT adds no parameters: every variant takes the PPT model's weights, strictly
            load_state_dict(model, weights, source="the benchmark's PPT model")
        model.set_train(False)
    return models


class _MatMulRoof(nn.Cell):
    """One large float32 matmul with a constant weight (a Linear layer): the roof of MindSpore's MAC rate."""

    def __init__(self, k: int, n: int):
        super().__init__()
        weight = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
        self.weight = ms.Parameter(Tensor(weight), name="roof_weight")

    def construct(self, x: Tensor) -> Tensor:
        return ops.matmul(x, self.weight)


def _mindspore_roof() -> tuple[Callable[[], Any], int]:
    m, k, n = MATMUL_SIZE
    x = Tensor(np.random.default_rng(1).standard_normal((m, k)).astype(np.float32))
    return functools.partial(_MatMulRoof(k, n), x), m * k * n


def _calls(backend: str, models: dict[str, VisionTransformer], x: np.ndarray, folder: Path, seed: int,
           threads: int | None) -> dict[str, Callable[[], Any]]:
    """One zero-argument call per model on ``x`` in ``backend``: the Cell (graph mode) or its ONNX export
    (written to ``folder``, verified against the Cell, run by onnxruntime)."""
    if backend == "mindspore":
        tensor = Tensor(x)
        return {name: functools.partial(model, tensor) for name, model in models.items()}
    runtime = get_runtime("onnx")  # the onnxruntime backend
    calls = {}
    for name, model in models.items():
        result = export_model(model, folder / f"{name}_b{x.shape[0]}", runtime.file_format, x.shape[0], seed=seed)
        calls[name] = functools.partial(runtime.open(result.path, threads=threads), x)
    return calls


def _time_batch(calls: dict[tuple[str, str], Callable[[], Any]], roofs: dict[str, Callable[[], Any]], bs: int,
                warmup: int, runs: int, log: TextIO | None) -> dict[tuple[str, str], dict[str, Any]]:
    """Warm every call up, then time them in interleaved rounds, each round also timing every backend's
    matmul roof (slow drift in machine load hits all alike). Keys ``(backend, variant)``; the roofs are
    under ``(backend, "roof")``."""
    times: dict[tuple[str, str], dict[str, Any]] = {}
    every = {**calls, **{(b, "roof"): roof for b, roof in roofs.items()}}
    for key, call in every.items():
        first = timed_call(call)[1]
        for _ in range(warmup - 1):
            timed_call(call)
        times[key] = {"first_call_seconds": first, "runs_seconds": []}
        if log:
            print(f"batch {bs}: {key[0]} {key[1]} warmed up (first call {first:.2f} s)", file=log, flush=True)
    for i in range(runs):
        # Every other round in reverse order: drift within a round then favours no variant.
        for key, call in (every.items() if i % 2 == 0 else reversed(every.items())):
            time.sleep(SETTLE_SECONDS)
            times[key]["runs_seconds"].append(timed_call(call)[1])
        if log:
            line = ", ".join(f"{b} {n} {v['runs_seconds'][-1]:.3f} s" for (b, n), v in times.items())
            print(f"batch {bs}: run {i + 1}/{runs}: {line}", file=log, flush=True)
    return times


def _paired(num: Sequence[float], den: Sequence[float]) -> tuple[float, list[float]]:
    """Median and interquartile range of the per-round ratios ``num[i] / den[i]``: the two calls of a round ran
    seconds apart, so a change of machine speed between rounds (this kind of shared 2-core machine drifts by
    +-15 % within minutes) cancels out, where a ratio of medians would mix rounds."""
    ratios = [a / b for a, b in zip(num, den)]
    return statistics.median(ratios), [float(np.percentile(ratios, 25)), float(np.percentile(ratios, 75))]


def _summarise(entry: dict[str, Any], roof_runs: Sequence[float], roof_macs: int, macs: dict[str, int]) -> None:
    """Medians, p50/p90 latency, images/s, MAC utilisation and per-round speed-ups of every variant; the bound,
    PPT against it and the reduction's share of the PPT model's time."""
    base = entry["baseline"]
    entry["macs_per_second"] = roof_macs / statistics.median(roof_runs)
    entry["roof_runs_seconds"] = list(roof_runs)
    for name, times in ((k, v) for k, v in entry.items() if isinstance(v, dict)):
        runs = times["runs_seconds"]
        times.update(median_seconds=statistics.median(runs), min_seconds=min(runs),
                     p50_seconds=float(np.percentile(runs, 50)), p90_seconds=float(np.percentile(runs, 90)))
        times.update(images_per_sec=entry["batch_size"] / times["median_seconds"])
        if name in macs:
            times["mac_utilisation"] = mac_utilisation(times["images_per_sec"], macs[name], entry["macs_per_second"])
        if name != "baseline":
            times["speedup"], times["speedup_iqr"] = _paired(base["runs_seconds"], runs)
    ppt_runs, slice_runs = entry["ppt"]["runs_seconds"], entry["ppt_plain_slice"]["runs_seconds"]
    entry["speedup"], entry["speedup_iqr"] = entry["ppt"]["speedup"], entry["ppt"]["speedup_iqr"]
    entry["speedup_medians"] = base["median_seconds"] / entry["ppt"]["median_seconds"]
    # The fastest runs are the least disturbed by other processes: another estimate on a busy machine.
    entry["speedup_best"] = base["min_seconds"] / entry["ppt"]["min_seconds"]
    entry["reduction_seconds"] = statistics.median(p - s for p, s in zip(ppt_runs, slice_runs))
    entry["reduction_share"] = statistics.median((p - s) / p for p, s in zip(ppt_runs, slice_runs))
    entry["reduction_share_best"] = 1.0 - min(slice_runs) / min(ppt_runs)
    # The bound: the speed-up a free reduction (the plain slice, same token counts) gives on this runtime.
    entry["bound"] = entry["ppt_plain_slice"]["speedup"]
    entry["ratio_to_bound"] = _paired(slice_runs, ppt_runs)[0]


def _check_arguments(model_kwargs: dict[str, Any], batch_sizes: Sequence[int], warmup: int, runs: int,
                     latency_runs: int, backends: Sequence[str]) -> None:
    if model_kwargs.get("ppt") is None:
        raise ValueError("benchmark: the config has ppt.enabled: false; enable PPT to compare it with the baseline")
    if not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ValueError(f"benchmark: batch sizes must be ints >= 1, got {list(batch_sizes)}")
    if warmup < 1 or runs < 1 or latency_runs < 1:
        raise ValueError(f"benchmark: warmup, runs and latency runs must be >= 1 (the first call compiles), got "
                         f"warmup={warmup}, runs={runs}, latency_runs={latency_runs}")
    unknown = [b for b in backends if b not in BACKENDS]
    if not backends or unknown:
        raise ValueError(f"benchmark: backends must be some of {', '.join(BACKENDS)}, got {list(backends)}")
    if "onnxruntime" in backends:
        get_runtime("onnx").check_available()  # before minutes of compiling


def benchmark(model_kwargs: dict[str, Any], batch_sizes: Sequence[int], *, warmup: int = 2, runs: int = 5,
              latency_runs: int = 20, seed: int = 0, policies: Sequence[str] = (),
              backends: Sequence[str] = ("mindspore",), threads: int | None = None,
              log: TextIO | None = sys.stderr) -> dict[str, Any]:
    """Time the baseline, the PPT model, the PPT model with plain-slice reduction, and the PPT model with
    each of ``policies`` (e.g. ``("prune", "pool")``, as ``policy_<name>``), in each of ``backends``.

    Args:
        model_kwargs: ``create_model`` arguments (``src.config.model_kwargs(cfg)``) with PPT set.
        batch_sizes: batch sizes to time, each compiled (and exported) separately.
        warmup: untimed calls per model and batch size, the first of which compiles (>= 1).
        runs: timed rounds (>= 1); ``latency_runs`` at batch 1, where the p50/p90 latency is the point.
        seed: seeds the random weights and input.
        policies: further token-reduction policies to time with the same setting.
        backends: ``mindspore`` (the Cells in the current execution mode) and/or ``onnxruntime`` (the same
            models with the same weights exported to temporary ONNX files, verified against the Cells).
        threads: intra-op threads of both runtimes (None: the usable cores); MindSpore's are fixed for the
            rest of the process (:func:`src.timing.fix_cpu_threads`).
        log: progress lines go here (None: silent).

    Returns:
        ``reduction_method``, ``weights`` (always random), ``host`` (:func:`host_info` at the start),
        ``settings`` (what decides a ratio: ``batch_sizes``, ``warmup``, ``runs``, ``latency_runs``,
        ``threads``, ``settle_seconds``, ``seed``, ``backends``, ``policies``, ``versions``), ``macs`` (per
        image: baseline, ppt and each policy), ``macs_ratio`` (baseline / ppt) and ``results``: one dict per
        backend and batch size with
        ``backend``, ``batch_size``, ``macs_per_second`` (median rate of a ``MATMUL_SIZE`` float32 matmul
        timed in every round in that backend: the roof) and ``roof_runs_seconds``; per variant
        ``first_call_seconds``, ``runs_seconds``, ``median_seconds``, ``min_seconds``, ``p50_seconds``,
        ``p90_seconds`` (latency of a call), ``images_per_sec`` (from the median), ``mac_utilisation``
        (images/s x MACs per image / the roof; not for the plain slice), ``speedup`` and ``speedup_iqr``
        (median and interquartile range of the per-round ratios baseline / variant); and of the PPT model
        ``speedup`` and ``speedup_iqr`` (the same), ``speedup_medians`` (ratio of the medians),
        ``speedup_best`` and ``reduction_share_best`` (from the fastest runs, less disturbed by other
        processes), ``reduction_seconds`` and ``reduction_share`` (medians over rounds); ``bound`` (the plain
        slice's speed-up: what a free reduction would give) and ``ratio_to_bound`` (median of the per-round
        ratios plain slice / PPT time).
    """
    _check_arguments(model_kwargs, batch_sizes, warmup, runs, latency_runs, backends)
    host = host_info()
    threads = usable_cores() if threads is None else threads
    if "mindspore" in backends:
        fix_cpu_threads(threads)
    settings = {"batch_sizes": list(batch_sizes), "warmup": warmup, "runs": runs, "latency_runs": latency_runs,
                "threads": threads, "settle_seconds": SETTLE_SECONDS, "seed": seed, "backends": list(backends),
                "policies": list(policies), "versions": runtime_versions()}
    ms.set_seed(seed)
    models = _variants(model_kwargs, policies)
    macs = {name: int(count_macs(m)["total"]) for name, m in models.items() if name != "ppt_plain_slice"}
    ref, rng = models["ppt"], np.random.default_rng(seed)
    roofs = {b: _mindspore_roof() if b == "mindspore" else matmul_roof(threads=threads) for b in backends}
    results = []
    with tempfile.TemporaryDirectory(prefix="ppt_bench_") as folder:
        for bs in batch_sizes:
            x = rng.standard_normal((bs, ref.in_chans, ref.img_size, ref.img_size), dtype=np.float32)
            calls = {(b, name): call for b in backends
                     for name, call in _calls(b, models, x, Path(folder), seed, threads).items()}
            times = _time_batch(calls, {b: r[0] for b, r in roofs.items()}, bs, warmup,
                                latency_runs if bs == 1 else runs, log)
            for b in backends:
                entry = {"backend": b, "batch_size": bs, **{n: t for (bb, n), t in times.items()
                                                           if bb == b and n != "roof"}}
                _summarise(entry, times[(b, "roof")]["runs_seconds"], roofs[b][1], macs)
                results.append(entry)
    return {"reduction_method": REDUCTION_METHOD, "weights": "random initialisation (timing only)", "host": host,
            "settings": settings, "macs": macs, "macs_ratio": macs["baseline"] / macs["ppt"], "results": results}


def format_benchmark(report: dict[str, Any]) -> str:
    """A text table of :func:`benchmark`'s report, one row per backend and batch size."""
    host, settings = report["host"], report["settings"]
    load = "n/a" if host["load_avg_1min"] is None else f"{host['load_avg_1min']:.2f}"
    versions = ", ".join(f"{k} {v}" for k, v in settings["versions"].items() if v)
    lines = [f"host: {host['cpu']}, {host['cores']} cores, 1-min load average at start {load}; "
             f"{settings['threads']} intra-op threads; {versions}",
             f"weights: {report['weights']}",
             f"GMACs/image: baseline {report['macs']['baseline'] / 1e9:.4g}, PPT {report['macs']['ppt'] / 1e9:.4g} "
             f"(ratio {report['macs_ratio']:.2f}x, the ideal speed-up)",
             f"reduction cost: {report['reduction_method']}",
             f"MAC utilisation: img/s x MACs per image / the rate of a {'x'.join(map(str, MATMUL_SIZE))} float32 "
             f"matmul timed in every round in the same backend (roof GMAC/s)",
             f"{settings['runs']} rounds ({settings['latency_runs']} at batch 1) after {settings['warmup']} warm-up "
             f"call(s); img/s from median times; speed-up: median (IQR) of the per-round ratios baseline / PPT time, "
             f"medians: ratio of the median times, best-run: of the fastest runs; bound: the plain slice's speed-up "
             f"(a free reduction), ratio/bound: plain slice / PPT time per round; latency in ms per call:", ""]
    header = ["backend", "batch", "baseline img/s", "PPT img/s", "slice img/s", "speed-up (IQR)", "medians",
              "best-run", "bound", "ratio/bound", "reduction", "roof GMAC/s", "MAC util base/PPT", "p50 base/PPT",
              "p90 base/PPT"]
    rows = []
    for e in report["results"]:
        base, ppt = e["baseline"], e["ppt"]
        rows.append([e["backend"], str(e["batch_size"]), f"{base['images_per_sec']:.1f}",
                     f"{ppt['images_per_sec']:.1f}", f"{e['ppt_plain_slice']['images_per_sec']:.1f}",
                     f"{e['speedup']:.2f}x ({e['speedup_iqr'][0]:.2f}-{e['speedup_iqr'][1]:.2f})",
                     f"{e['speedup_medians']:.2f}x", f"{e['speedup_best']:.2f}x", f"{e['bound']:.2f}x",
                     f"{100 * e['ratio_to_bound']:.1f} %", f"{100 * e['reduction_share']:.1f} %",
                     f"{e['macs_per_second'] / 1e9:.1f}",
                     f"{100 * base['mac_utilisation']:.0f} / {100 * ppt['mac_utilisation']:.0f} %",
                     f"{1e3 * base['p50_seconds']:.0f} / {1e3 * ppt['p50_seconds']:.0f}",
                     f"{1e3 * base['p90_seconds']:.0f} / {1e3 * ppt['p90_seconds']:.0f}"])
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header] + rows]
    for e in report["results"]:
        for name in (k for k in e if k.startswith("policy_")):
            lines.append(f"{e['backend']}, batch {e['batch_size']}, policy {name[len('policy_'):]}: "
                         f"{e[name]['images_per_sec']:.1f} img/s, {e[name]['speedup']:.2f}x the baseline, "
                         f"{e['ppt']['median_seconds'] / e[name]['median_seconds']:.2f}x the PPT model")
    return "\n".join(lines)
