"""Inference throughput of the baseline DeiT against PPT, and the share of PPT's time its token reduction takes.

Three models with the same (random) weights run on the same random batch:

- ``baseline``: the configured DeiT without PPT;
- ``ppt``: the configured PPT model;
- ``ppt_plain_slice``: the PPT model whose PP blocks, instead of scoring, sorting, matching and pooling,
  keep their first ``N - r`` tokens with a plain slice. Token counts, and so the cost of every other
  operation, are the same as in ``ppt``; the time difference is what the reduction itself costs.

``ppt_plain_slice`` is a measurement tool only, made by temporarily replacing the ``prune_or_pool`` that
``src.models.layers.Block`` calls (:func:`plain_slice_reduction`) while that model is compiled and called;
the model code itself is unchanged. Its outputs are meaningless.

Timing: the first call of each model (which compiles the graph in graph mode) and the further warm-up
calls are not timed; then the models are timed in interleaved rounds (baseline, ppt, ppt_plain_slice,
repeated), each call synchronised by copying the logits to the host, so a change of machine load affects
all three alike. Reported: median seconds per batch, images/s, speed-up = baseline / ppt median time, the
MACs ratio (the ideal speed-up, :func:`src.flops.count_macs`), and the reduction's share = median over
rounds of ``(ppt - ppt_plain_slice) / ppt``; and the same two from each model's fastest run, a steadier estimate
when other processes share the CPU. Random weights are enough: shapes are static and both
reduction branches run for every image, so PPT's cost does not depend on the weights or the input.
"""
import contextlib
import functools
import os
import statistics
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, TextIO

import numpy as np
import mindspore as ms
from mindspore import Tensor, ops

from .flops import count_macs
from .models import VisionTransformer, create_model
from .models import layers as _layers

__all__ = ["REDUCTION_METHOD", "plain_slice_reduction", "benchmark", "format_benchmark", "host_info"]

REDUCTION_METHOD = ("PPT model timed against the same model whose PP blocks keep their first N-r tokens with a "
                    "plain slice instead of prune_or_pool (same token counts, no scoring/sorting/pooling)")
VARIANTS = ("baseline", "ppt", "ppt_plain_slice")


def _keep_first_tokens(x: Tensor, size: Tensor, attn: Tensor, v: Tensor, metric: Tensor, r: int,
                       threshold: float, num_protected: int, source: Optional[Tensor] = None):
    """Drop-in for ``prune_or_pool`` keeping the first ``N - r`` tokens; reports every image as pruned."""
    n = x.shape[1] - r
    svar = ops.zeros((x.shape[0],), ms.float32)
    kept_source = None if source is None else source[:, :n]
    return x[:, :n], size[:, :n], kept_source, svar > 0, svar


@contextlib.contextmanager
def plain_slice_reduction() -> Iterator[None]:
    """Within this context, PP blocks built by ``src.models`` keep their first ``N - r`` tokens instead of
    pruning or pooling (a measurement tool; see the module docstring). In graph mode a model compiled
    inside the context keeps the slice; in PyNative mode every call must be made inside it."""
    original = _layers.prune_or_pool
    _layers.prune_or_pool = _keep_first_tokens
    try:
        yield
    finally:
        _layers.prune_or_pool = original


def host_info() -> Dict[str, Any]:
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
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": cores, "load_avg_1min": load}


def _copy_weights(src: VisionTransformer, dst: VisionTransformer) -> None:
    """Give ``dst`` the weights of ``src`` (the same architecture; PPT adds no parameters)."""
    src_params, dst_params = dict(src.parameters_and_names()), dict(dst.parameters_and_names())
    if list(src_params) != list(dst_params):
        raise ValueError("benchmark: the baseline and PPT models have different parameters")
    for name, param in src_params.items():
        dst_params[name].set_data(Tensor(param.asnumpy()))


def _timed(call: Callable[[], Tensor]) -> float:
    t0 = time.perf_counter()
    call().asnumpy()  # waits for the device
    return time.perf_counter() - t0


def benchmark(model_kwargs: Dict[str, Any], batch_sizes: Sequence[int], *, warmup: int = 2, runs: int = 5,
              seed: int = 0, log: Optional[TextIO] = sys.stderr) -> Dict[str, Any]:
    """Time the baseline, the PPT model and the PPT model with plain-slice reduction.

    Args:
        model_kwargs: ``create_model`` arguments (``src.config.model_kwargs(cfg)``) with PPT set.
        batch_sizes: batch sizes to time, each compiled separately in graph mode.
        warmup: untimed calls per model and batch size, the first of which compiles (>= 1).
        runs: timed rounds (>= 1).
        seed: seeds the random weights and input.
        log: progress lines go here (None: silent).

    Returns:
        ``reduction_method``, ``weights`` (always random), ``host`` (:func:`host_info` at the start),
        ``warmup``, ``runs``, ``macs`` (per image, per variant), ``macs_ratio`` (baseline / ppt) and
        ``results``: one dict per batch size with ``batch_size``, per variant ``first_call_seconds``,
        ``runs_seconds``, ``median_seconds``, ``min_seconds``, ``images_per_sec`` (from the median), and
        ``speedup``, ``reduction_seconds``, ``reduction_share`` (from the medians), ``speedup_best``,
        ``reduction_share_best`` (from the fastest runs, less disturbed by other processes).
    """
    if model_kwargs.get("ppt") is None:
        raise ValueError("benchmark: the config has ppt.enabled: false; enable PPT to compare it with the baseline")
    if not batch_sizes or any(not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise ValueError(f"benchmark: batch sizes must be ints >= 1, got {list(batch_sizes)}")
    if warmup < 1 or runs < 1:
        raise ValueError(f"benchmark: warmup and runs must be >= 1 (the first call compiles), got "
                         f"warmup={warmup}, runs={runs}")
    host = host_info()
    ms.set_seed(seed)
    models = {"ppt": create_model(**model_kwargs)}
    models["baseline"] = create_model(**dict(model_kwargs, ppt=None))
    models["ppt_plain_slice"] = create_model(**model_kwargs)
    for name in ("baseline", "ppt_plain_slice"):
        _copy_weights(models["ppt"], models[name])
    for net in models.values():
        net.set_train(False)
    macs = {name: int(count_macs(models[name])["total"]) for name in ("baseline", "ppt")}
    ref = models["ppt"]
    rng = np.random.default_rng(seed)

    def call(name: str, x: Tensor) -> Callable[[], Tensor]:
        if name == "ppt_plain_slice":
            def run_sliced() -> Tensor:
                with plain_slice_reduction():
                    return models[name](x)
            return run_sliced
        return functools.partial(models[name], x)

    results: List[Dict[str, Any]] = []
    for bs in batch_sizes:
        x = Tensor(rng.standard_normal((bs, ref.in_chans, ref.img_size, ref.img_size), dtype=np.float32))
        entry: Dict[str, Any] = {"batch_size": bs}
        for name in VARIANTS:
            first = _timed(call(name, x))
            for _ in range(warmup - 1):
                _timed(call(name, x))
            entry[name] = {"first_call_seconds": first, "runs_seconds": []}
            if log:
                print(f"batch {bs}: {name} warmed up (first call {first:.2f} s)", file=log, flush=True)
        for i in range(runs):
            for name in VARIANTS:
                entry[name]["runs_seconds"].append(_timed(call(name, x)))
            if log:
                times = ", ".join(f"{name} {entry[name]['runs_seconds'][-1]:.3f} s" for name in VARIANTS)
                print(f"batch {bs}: run {i + 1}/{runs}: {times}", file=log, flush=True)
        for name in VARIANTS:
            median = statistics.median(entry[name]["runs_seconds"])
            entry[name].update(median_seconds=median, min_seconds=min(entry[name]["runs_seconds"]),
                               images_per_sec=bs / median)
        ppt_runs, slice_runs = entry["ppt"]["runs_seconds"], entry["ppt_plain_slice"]["runs_seconds"]
        entry["speedup"] = entry["baseline"]["median_seconds"] / entry["ppt"]["median_seconds"]
        # The fastest runs are the least disturbed by other processes: a second estimate on a busy machine.
        entry["speedup_best"] = entry["baseline"]["min_seconds"] / entry["ppt"]["min_seconds"]
        # Paired per round, so that slow drift in machine load cancels out.
        entry["reduction_seconds"] = statistics.median(p - s for p, s in zip(ppt_runs, slice_runs))
        entry["reduction_share"] = statistics.median((p - s) / p for p, s in zip(ppt_runs, slice_runs))
        entry["reduction_share_best"] = 1.0 - min(slice_runs) / min(ppt_runs)
        results.append(entry)
    return {
        "reduction_method": REDUCTION_METHOD,
        "weights": "random initialisation (timing only)",
        "host": host,
        "warmup": warmup,
        "runs": runs,
        "macs": macs,
        "macs_ratio": macs["baseline"] / macs["ppt"],
        "results": results,
    }


def format_benchmark(report: Dict[str, Any]) -> str:
    """A text table of :func:`benchmark`'s report, one row per batch size."""
    host = report["host"]
    load = "n/a" if host["load_avg_1min"] is None else f"{host['load_avg_1min']:.2f}"
    lines = [f"host: {host['cpu']}, {host['cores']} cores, 1-min load average at start {load}",
             f"weights: {report['weights']}",
             f"GMACs/image: baseline {report['macs']['baseline'] / 1e9:.4g}, PPT {report['macs']['ppt'] / 1e9:.4g} "
             f"(ratio {report['macs_ratio']:.2f}x, the ideal speed-up)",
             f"reduction cost: {report['reduction_method']}",
             f"median of {report['runs']} runs after {report['warmup']} warm-up call(s); best-run columns compare "
             f"the fastest run of each model:", ""]
    header = ["batch", "baseline img/s", "PPT img/s", "slice img/s", "MACs ratio", "speed-up", "reduction share",
              "best-run speed-up", "best-run reduction"]
    rows = [[str(e["batch_size"]), f"{e['baseline']['images_per_sec']:.1f}", f"{e['ppt']['images_per_sec']:.1f}",
             f"{e['ppt_plain_slice']['images_per_sec']:.1f}", f"{report['macs_ratio']:.2f}x",
             f"{e['speedup']:.2f}x", f"{100 * e['reduction_share']:.1f} %", f"{e['speedup_best']:.2f}x",
             f"{100 * e['reduction_share_best']:.1f} %"]
            for e in report["results"]]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [header] + rows]
    return "\n".join(lines)
