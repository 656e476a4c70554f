"""Inference throughput of the baseline DeiT against PPT, and the share of PPT's time its token reduction takes.

Three models with the same (random) weights run on the same random batch:

- ``baseline``: the configured DeiT without PPT;
- ``ppt``: the configured PPT model;
- ``ppt_plain_slice``: the same model with the ``keep_first`` policy (``src.token_reduction``): its PP
  blocks keep their first ``N - r`` tokens with a plain slice instead of scoring, sorting, matching and
  pooling. Token counts, and so the cost of every other operation, are the same as in ``ppt``; the time
  difference is what the reduction itself costs. Its outputs are meaningless.

Timing: the first call of each model (which compiles the graph in graph mode) and the further warm-up
calls are not timed; then the models are timed in interleaved rounds (baseline, ppt, ppt_plain_slice,
repeated), each call synchronised by copying the logits to the host, so a change of machine load affects
all three alike. Reported: median seconds per batch, images/s, speed-up = baseline / ppt median time, the
MACs ratio (the ideal speed-up, :func:`src.flops.count_macs`), and the reduction's share = median over
rounds of ``(ppt - ppt_plain_slice) / ppt``; and the same two from each model's fastest run, a steadier estimate
when other processes share the CPU. Random weights are enough: shapes are static and both
reduction branches run for every image, so PPT's cost does not depend on the weights or the input.
"""
import os
import statistics
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import mindspore as ms
import numpy as np
from mindspore import Tensor

from .flops import count_macs
from .models import VisionTransformer, create_model
from .timing import timed_call
from .token_reduction import PPTSetting

__all__ = ["REDUCTION_METHOD", "benchmark", "format_benchmark", "host_info"]

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


def _variants(model_kwargs: dict[str, Any], policies: Sequence[str]) -> dict[str, VisionTransformer]:
    """The models to time, all with the PPT model's (random) weights, in evaluation mode."""
    setting = PPTSetting.coerce(model_kwargs["ppt"])
    settings = {"baseline": None, "ppt": setting, "ppt_plain_slice": setting.replace(policy="keep_first")}
    settings.update({f"policy_{p}": setting.replace(policy=p) for p in policies})
    models = {name: create_model(**dict(model_kwargs, ppt=s)) for name, s in settings.items()}
    for name, model in models.items():
        if name != "ppt":
            _copy_weights(models["ppt"], model)
        model.set_train(False)
    return models


def _time_batch(models: dict[str, VisionTransformer], x: Tensor, warmup: int, runs: int,
                log: TextIO | None) -> dict[str, Any]:
    """Warm every model up, then time them in interleaved rounds (slow drift in machine load hits all)."""
    bs = x.shape[0]
    entry: dict[str, Any] = {"batch_size": bs}
    for name, model in models.items():
        first = timed_call(model, x)[1]
        for _ in range(warmup - 1):
            timed_call(model, x)
        entry[name] = {"first_call_seconds": first, "runs_seconds": []}
        if log:
            print(f"batch {bs}: {name} warmed up (first call {first:.2f} s)", file=log, flush=True)
    for i in range(runs):
        for name, model in models.items():
            entry[name]["runs_seconds"].append(timed_call(model, x)[1])
        if log:
            times = ", ".join(f"{name} {entry[name]['runs_seconds'][-1]:.3f} s" for name in models)
            print(f"batch {bs}: run {i + 1}/{runs}: {times}", file=log, flush=True)
    return entry


def _summarise(entry: dict[str, Any]) -> None:
    """Medians, images/s and speed-ups of every variant; the reduction's share of the PPT model's time."""
    base = entry["baseline"]
    for name, times in ((k, v) for k, v in entry.items() if isinstance(v, dict)):
        times.update(median_seconds=statistics.median(times["runs_seconds"]), min_seconds=min(times["runs_seconds"]))
        times.update(images_per_sec=entry["batch_size"] / times["median_seconds"])
        if name != "baseline":
            times["speedup"] = base["median_seconds"] / times["median_seconds"]
    ppt_runs, slice_runs = entry["ppt"]["runs_seconds"], entry["ppt_plain_slice"]["runs_seconds"]
    entry["speedup"] = entry["ppt"]["speedup"]
    # The fastest runs are the least disturbed by other processes: a second estimate on a busy machine.
    entry["speedup_best"] = base["min_seconds"] / entry["ppt"]["min_seconds"]
    # Paired per round, so that slow drift in machine load cancels out.
    entry["reduction_seconds"] = statistics.median(p - s for p, s in zip(ppt_runs, slice_runs))
    entry["reduction_share"] = statistics.median((p - s) / p for p, s in zip(ppt_runs, slice_runs))
    entry["reduction_share_best"] = 1.0 - min(slice_runs) / min(ppt_runs)


def benchmark(model_kwargs: dict[str, Any], batch_sizes: Sequence[int], *, warmup: int = 2, runs: int = 5,
              seed: int = 0, policies: Sequence[str] = (), log: TextIO | None = sys.stderr) -> dict[str, Any]:
    """Time the baseline, the PPT model, the PPT model with plain-slice reduction, and the PPT model with
    each of ``policies`` (e.g. ``("prune", "pool")``, as ``policy_<name>``).

    Args:
        model_kwargs: ``create_model`` arguments (``src.config.model_kwargs(cfg)``) with PPT set.
        batch_sizes: batch sizes to time, each compiled separately in graph mode.
        warmup: untimed calls per model and batch size, the first of which compiles (>= 1).
        runs: timed rounds (>= 1).
        seed: seeds the random weights and input.
        policies: further token-reduction policies to time with the same setting.
        log: progress lines go here (None: silent).

    Returns:
        ``reduction_method``, ``weights`` (always random), ``host`` (:func:`host_info` at the start),
        ``warmup``, ``runs``, ``macs`` (per image: baseline, ppt and each policy), ``macs_ratio`` (baseline /
        ppt) and ``results``: one dict per batch size with ``batch_size``, per variant ``first_call_seconds``,
        ``runs_seconds``, ``median_seconds``, ``min_seconds``, ``images_per_sec`` (from the median) and
        ``speedup`` (baseline / variant medians), and ``speedup``, ``reduction_seconds``, ``reduction_share``
        (from the medians), ``speedup_best``, ``reduction_share_best`` (from the fastest runs, less disturbed
        by other processes) of the PPT model.
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
    models = _variants(model_kwargs, policies)
    macs = {name: int(count_macs(m)["total"]) for name, m in models.items() if name != "ppt_plain_slice"}
    ref, rng = models["ppt"], np.random.default_rng(seed)
    results = []
    for bs in batch_sizes:
        x = Tensor(rng.standard_normal((bs, ref.in_chans, ref.img_size, ref.img_size), dtype=np.float32))
        entry = _time_batch(models, x, warmup, runs, log)
        _summarise(entry)
        results.append(entry)
    return {"reduction_method": REDUCTION_METHOD, "weights": "random initialisation (timing only)", "host": host,
            "warmup": warmup, "runs": runs, "macs": macs, "macs_ratio": macs["baseline"] / macs["ppt"],
            "results": results}


def format_benchmark(report: dict[str, Any]) -> str:
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
    for e in report["results"]:
        for name in (k for k in e if k.startswith("policy_")):
            lines.append(f"batch {e['batch_size']}, policy {name[len('policy_'):]}: {e[name]['images_per_sec']:.1f} "
                         f"img/s, {e[name]['speedup']:.2f}x the baseline, "
                         f"{e['ppt']['median_seconds'] / e[name]['median_seconds']:.2f}x the PPT model")
    return "\n".join(lines)
