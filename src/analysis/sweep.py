"""Accuracy / MACs / throughput trade-off of PPT over a grid of settings.

:func:`run_sweep` measures the baseline DeiT (no PPT) and every combination of the given r values, PP layer
sets and thresholds, with the same weights:

- ``macs``: per image, :func:`src.flops.count_macs` (analytic; ``macs_ratio`` = setting / baseline);
- ``images_per_sec``: the model's lean inference path on one fixed random batch, in the current MindSpore
  mode (graph mode from the command line): one untimed warm-up call (it compiles), then the median of
  ``timing_runs`` timed calls, each synchronised by copying the logits to the host; ``speedup`` = setting /
  baseline;
- ``top1``/``top5``/``loss``/``pooled_fraction``: with a dataset only, via :func:`src.evaluation.evaluate`,
  optionally on a fixed random subset of about ``max_images`` images (rounded up to whole batches; the same
  images for every setting).

It writes ``<out_prefix>.csv`` and ``<out_prefix>.json`` (the rows and the run's parameters) and
``<out_prefix>.png``: top-1 vs GMACs and images/s vs GMACs, one line per (layers, threshold), the baseline
marked with a star. Every file is written atomically. Command line: ``benchmark.py --sweep``.
"""
import copy
import csv
import io
import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..config import configured_spec
from ..factory import build_model, dataset_from_config
from ..flops import count_macs
from ..io.fileio import write_bytes_atomic, write_json_atomic
from ..models import VisionTransformer
from ..timing import time_calls
from ..token_reduction import PPTSetting

__all__ = ["CSV_COLUMNS", "run_sweep", "measure_throughput", "evaluate_on", "format_sweep", "plot_sweep"]

CSV_COLUMNS = ("name", "ppt", "r", "layers", "threshold", "tokens", "macs", "gmacs", "macs_ratio",
               "images_per_sec", "speedup", "top1", "top5", "loss", "num_images", "pooled_fraction")


def measure_throughput(model: VisionTransformer, batch_size: int, runs: int, seed: int = 0) -> float:
    """Images per second of ``model(x)`` on a fixed random batch: median of ``runs`` timed calls after one
    untimed warm-up call (which compiles in graph mode)."""
    x = np.random.default_rng(seed).standard_normal((batch_size, model.in_chans, model.img_size, model.img_size))
    was_training = model.training
    model.set_train(False)
    try:
        times = time_calls(model, Tensor(x.astype(np.float32)), warmup=1, runs=runs)
    finally:
        model.set_train(was_training)
    return batch_size / statistics.median(times)


def evaluate_on(model: VisionTransformer, cfg: dict[str, Any], data: str, *, split: str = "val",
                batch_size: int | None = None, max_images: int | None = None, progress: bool = True,
                desc: str = "eval") -> dict[str, Any]:
    """:func:`src.evaluation.evaluate` of ``model`` on ``<data>/<split>`` (``data`` may be ``"demo"``),
    preprocessed as ``cfg["data"]`` says; with ``max_images``, on a seeded random subset of about that many
    images (whole batches), the same for every call with the same arguments."""
    from ..evaluation import evaluate

    batch_size = batch_size or cfg["data"]["batch_size"]
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    # A subset must not be the first classes of a class-sorted folder: shuffle, with the config's seed, so
    # every call sees the same images.
    dataset, _ = dataset_from_config(cfg, split, data_path=data, batch_size=batch_size,
                                     shuffle=max_images is not None, seed=cfg["seed"])
    if max_images is not None:
        dataset = dataset.take(math.ceil(max_images / batch_size))
    return evaluate(model, dataset, progress=progress, desc=desc)


def _setting_cfg(cfg: dict[str, Any], r: int, layers: Sequence[int], threshold: float) -> dict[str, Any]:
    out = copy.deepcopy(cfg)
    out["ppt"].update(enabled=True, r=r, layers=list(layers), threshold=threshold)
    return out


def _check_settings(cfg: dict[str, Any], r_values: Sequence[int], layer_sets: Sequence[Sequence[int]] | None,
                    thresholds: Sequence[float] | None):
    if not r_values or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in r_values):
        raise ValueError(f"sweep: r values must be ints >= 0, got {list(r_values)!r}")
    ppt = cfg["ppt"]
    if layer_sets is None:
        if ppt["layers"] is None:
            raise ValueError("sweep: the config has no ppt.layers (ppt.enabled: false); give the layer sets "
                             "(--sweep-layers)")
        layer_sets = [ppt["layers"]]
    if thresholds is None:
        if ppt["threshold"] is None:
            raise ValueError("sweep: the config has no ppt.threshold (ppt.enabled: false); give the thresholds "
                             "(--sweep-thresholds)")
        thresholds = [ppt["threshold"]]
    if not layer_sets or not thresholds:
        raise ValueError("sweep: empty list of layer sets or thresholds")
    for t in thresholds:
        if isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0:
            raise ValueError(f"sweep: thresholds must be numbers >= 0, got {t!r}")
    spec = configured_spec(cfg)
    for layers in layer_sets:  # fail before any model is built or timed
        PPTSetting(r=0, layers=tuple(layers), threshold=0.0).schedule(spec.num_tokens, spec.depth)
    return [list(layers) for layers in layer_sets], [float(t) for t in thresholds]


def _row(name: str, model: VisionTransformer, macs: int, threshold: float | None) -> dict[str, Any]:
    return {"name": name, "ppt": bool(model.ppt_layers), "r": list(model.ppt_r), "layers": list(model.ppt_layers),
            "threshold": threshold, "tokens": int(model.tokens_per_block[-1]), "macs": macs, "gmacs": macs / 1e9}


def run_sweep(cfg: dict[str, Any], ckpt_file: str | None, r_values: Sequence[int],
              layer_sets: Sequence[Sequence[int]] | None = None, thresholds: Sequence[float] | None = None,
              data: str | None = None, batch_size: int | None = None, max_images: int | None = None,
              timing_runs: int = 5, out_prefix: str = "outputs/sweep", *, split: str = "val",
              progress: bool = True) -> list[dict[str, Any]]:
    """Measure the baseline and every (layers, r, threshold) setting; write CSV, JSON and PNG.

    Args:
        cfg: a config from ``src.config.load_config`` (architecture, data preprocessing, and the PPT keys
            used as defaults: ``layers``, ``threshold``, ``prop_attn``).
        ckpt_file: weights loaded (strictly) into every model; None = random weights, allowed only without
            ``data`` (throughput and MACs do not depend on the weights).
        r_values: r of every PP block (one int per setting, clamped per block as the model does).
        layer_sets: PP layer lists to try (default: the config's ``ppt.layers``).
        thresholds: score-variance thresholds to try (default: the config's ``ppt.threshold``).
        data: dataset root or ``"demo"`` for top-1; None = no accuracy measured.
        batch_size: timing and evaluation batch (default: the config's ``data.batch_size``).
        max_images: evaluate on a fixed random subset of about this many images (whole batches).
        timing_runs: timed calls per setting (the median counts).
        out_prefix: the outputs are ``<out_prefix>.csv``, ``.json`` and ``.png``.
        split: dataset split folder.
        progress: progress lines on stderr.

    Returns:
        One dict per setting, the baseline first, with the keys of :data:`CSV_COLUMNS` (``top1``, ``top5``,
        ``loss``, ``num_images``, ``pooled_fraction`` are None without ``data``).
    """
    layer_sets, thresholds = _check_settings(cfg, r_values, layer_sets, thresholds)
    if data is not None and ckpt_file is None:
        raise ValueError("sweep: measuring top-1 on a dataset needs trained weights: give a checkpoint "
                         "(--ckpt_file)")
    if timing_runs < 1:
        raise ValueError(f"sweep: timing runs must be >= 1, got {timing_runs}")
    batch_size = batch_size or cfg["data"]["batch_size"]
    if batch_size < 1:
        raise ValueError(f"sweep: batch size must be >= 1, got {batch_size}")

    settings = [("baseline", None, None, None)]
    for layers, r, threshold in itertools.product(layer_sets, r_values, thresholds):
        settings.append((f"r={r} layers={layers} thr={threshold:g}", r, layers, threshold))

    rows = []
    for name, r, layers, threshold in settings:
        if r is None:
            model = build_model(cfg, ckpt_file, with_ppt=False)
        else:
            model = build_model(_setting_cfg(cfg, r, layers, threshold), ckpt_file)
        row = _row(name, model, int(count_macs(model)["total"]), threshold)
        row["images_per_sec"] = measure_throughput(model, batch_size, timing_runs, seed=cfg["seed"])
        row.update(top1=None, top5=None, loss=None, num_images=None, pooled_fraction=None)
        if data is not None:
            result = evaluate_on(model, cfg, data, split=split, batch_size=batch_size, max_images=max_images,
                                 progress=progress, desc=name)
            row.update({k: result[k] for k in ("top1", "top5", "loss", "num_images", "pooled_fraction")})
        if progress:
            print(f"sweep: {name}: {row['gmacs']:.3f} GMACs, {row['images_per_sec']:.1f} images/s"
                  + (f", top-1 {row['top1']:.2f} %" if row["top1"] is not None else ""), flush=True)
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["macs_ratio"] = row["macs"] / base["macs"]
        row["speedup"] = row["images_per_sec"] / base["images_per_sec"]
    rows = [{k: row[k] for k in CSV_COLUMNS} for row in rows]

    meta = {"model": cfg["model"]["name"], "checkpoint": ckpt_file, "data": data, "split": split,
            "max_images": max_images, "batch_size": batch_size, "timing_runs": timing_runs,
            "mode": "graph" if ms.get_context("mode") == ms.GRAPH_MODE else "pynative",
            "prop_attn": cfg["ppt"]["prop_attn"]}
    write_json_atomic(f"{out_prefix}.json", {**meta, "rows": rows})
    write_bytes_atomic(f"{out_prefix}.csv", _csv(rows).encode("utf-8"), make_parents=True)
    plot_sweep(rows, f"{out_prefix}.png", title=f"{cfg['model']['name']}, batch {batch_size}")
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as CSV; lists are space-separated, unmeasured values empty."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row[k]) for k in CSV_COLUMNS])
    return text.getvalue()


def format_sweep(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as an aligned text table."""
    header = ["setting", "tokens", "GMACs", "MACs ratio", "images/s", "speed-up", "top-1 (%)"]
    table = [[row["name"], str(row["tokens"]), f"{row['gmacs']:.3f}", f"{row['macs_ratio']:.3f}",
              f"{row['images_per_sec']:.1f}", f"{row['speedup']:.2f}x",
              "-" if row["top1"] is None else f"{row['top1']:.2f}"] for row in rows]
    widths = [max(len(line[i]) for line in [header] + table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
             for line in [header] + table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_sweep(rows: Sequence[dict[str, Any]], path: str, title: str = "") -> None:
    """Two panels, top-1 vs GMACs and images/s vs GMACs (the baseline is ``rows[0]``, a star); one line per
    (layers, threshold) through its r values, each point labelled with its r. Written atomically."""
    import matplotlib  # late: only plotting needs it

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    base, settings = rows[0], rows[1:]
    series: dict[str, list[dict[str, Any]]] = {}
    for row in settings:
        series.setdefault(f"layers {row['layers']}, thr {row['threshold']:g}", []).append(row)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100)
    for ax, key, label in ((axes[0], "top1", "top-1 (%)"), (axes[1], "images_per_sec", "images/s")):
        if base[key] is None:
            ax.text(0.5, 0.5, "top-1 not measured\n(no dataset given)", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            for name, points in series.items():
                points = sorted(points, key=lambda row: row["gmacs"])
                line, = ax.plot([p["gmacs"] for p in points], [p[key] for p in points], "o-", label=name)
                for p in points:
                    ax.annotate("r=" + ",".join(map(str, p["r"])), (p["gmacs"], p[key]), fontsize=7,
                                textcoords="offset points", xytext=(4, 4), color=line.get_color())
            ax.plot([base["gmacs"]], [base[key]], "*", color="black", markersize=14, label="baseline (no PPT)")
            ax.legend(fontsize=8)
        ax.set_xlabel("GMACs per image")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue(), make_parents=True)
