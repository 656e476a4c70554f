"""Evaluation loop: accuracy, cross-entropy, throughput and PPT statistics, plus a side-by-side table.

:func:`evaluate` runs a model over an eval pipeline from :func:`src.data.create_dataset` (batches
``(image, label, valid)``; rows with ``valid == 0`` -- padding and unreadable files -- are excluded from every
metric) and returns a flat dict of plain Python numbers, ready for JSON. :func:`format_comparison` renders
several such dicts (e.g. the baseline and the PPT model) as a text table.

Timing. ``seconds`` / ``images_per_sec`` are end to end (data pipeline + model, including the graph compile
of the first batch). ``forward_seconds`` / ``forward_images_per_sec`` time the model alone (input copy,
forward, copy back of the outputs) over every batch but the first, whose time -- the graph compile in graph
mode -- is ``first_batch_seconds``; with a single batch that first batch is all there is to time. Forward
throughput counts every row of a batch, padding included, since the model computes them all.
"""
import math
import os
import re
import sys
import time
from typing import Any, Dict, Iterator, List, Optional, TextIO, Tuple, Union

import numpy as np
import mindspore as ms
from mindspore import Tensor

from .flops import count_macs
from .models import PPTStats, VisionTransformer

__all__ = ["evaluate", "format_comparison", "unwrap_pipeline_error"]

# "ValueError: <message>" lines in the Python stack MindSpore embeds in its pipeline errors.
_USER_ERROR = re.compile(r"^(?:[A-Za-z_][\w.]*)?(?:Error|Exception): (?!Traceback)(.+)$", re.MULTILINE)


def unwrap_pipeline_error(exc: RuntimeError) -> Optional[str]:
    """The message of the Python exception a dataset source raised, from MindSpore's multi-line wrapper.

    ``mindspore.dataset`` re-raises an error of a Python source (e.g. the unreadable image of a strict eval
    pipeline) as a ``RuntimeError`` carrying both call stacks; the last ``SomeError: message`` line of it is
    the source's own message. Returns None when there is none (a genuine runtime failure).
    """
    found = _USER_ERROR.findall(str(exc))
    return found[-1].strip() if found else None


class _Progress:
    """Progress on stderr: one ``\\r``-updated line on a terminal, else a plain line every ``every`` s."""

    def __init__(self, desc: str, total: int, stream: Optional[TextIO] = None, every: float = 10.0):
        self.desc, self.total = desc, total
        self.stream = stream or sys.stderr  # looked up now, so a redirected sys.stderr is honoured
        self.tty = self.stream.isatty()
        self.every = 0.2 if self.tty else every
        self.last = -math.inf
        self.shown = False

    def update(self, batches: int, images: int, elapsed: float, final: bool = False) -> None:
        now = time.perf_counter()
        if not final and now - self.last < self.every:
            return
        self.last = now
        rate = images / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: batch {batches}/{self.total}, {images} images, {rate:.1f} images/s"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self.shown = not final

    def close(self) -> None:
        """End a ``\\r`` line left open by an error, so the error message starts on its own line."""
        if self.tty and self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


def _batches(dataset: Any) -> Iterator[Tuple[np.ndarray, ...]]:
    """The pipeline's batches as numpy arrays; a failure of its Python source becomes a one-line ValueError."""
    iterator = dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except RuntimeError as exc:
            message = unwrap_pipeline_error(exc)
            if message is None:
                raise
            raise ValueError(message) from exc
        yield batch


def _batch_metrics(logits: np.ndarray, label: np.ndarray, k: int):
    """Per row: top-1 hit, top-k hit, cross-entropy (float64)."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_prob[np.arange(len(label)), label]
    # A stable sort puts the first of tied maxima first, as argmax does.
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    hits = top == label[:, None]
    return hits[:, 0], hits.any(axis=1), loss


def evaluate(model: Union[VisionTransformer, PPTStats], dataset: Any, *, progress: bool = True,
             desc: str = "eval") -> Dict[str, Any]:
    """Evaluate ``model`` on an eval pipeline of ``(image, label, valid)`` batches.

    Args:
        model: a :class:`VisionTransformer`, or a :class:`PPTStats` wrapping one. The model is wrapped in
            ``PPTStats`` to collect the prune/pool decisions; in graph mode each new wrapper compiles anew,
            so a caller evaluating the same model repeatedly (per-epoch validation) should build one
            ``PPTStats(model)`` and pass it every time. The model runs in eval mode; its previous mode is
            restored afterwards.
        dataset: a ``mindspore.dataset`` pipeline from ``src.data.create_dataset(..., training=False)``.
        progress: show progress with images/s on stderr.
        desc: label of the progress line.

    Returns:
        ``top1``, ``top5`` (percent; top-5 is top-``num_classes`` for fewer than 5 classes), ``loss`` (mean
        cross-entropy), ``num_images`` (rows with ``valid == 1``), ``seconds``, ``images_per_sec``,
        ``first_batch_seconds``, ``forward_seconds``, ``forward_images_per_sec`` (see the module docstring),
        ``macs`` (per image, ``count_macs(model)["total"]``), ``ppt_layers`` (PP block indices),
        ``pooled_fraction`` / ``pruned_fraction`` (per PP block, the share of images pooled / pruned there)
        and ``svar_mean`` (per PP block, the mean score variance that decided it).

    Raises:
        ValueError: the batches do not have the eval columns, a label is outside the model's classes, no
            row is valid, or the pipeline's source failed (e.g. an unreadable image in strict mode; the
            message is the source's own, naming the file).
    """
    stats = model if isinstance(model, PPTStats) else PPTStats(model)
    net = stats.model
    num_classes, num_layers = net.num_classes, len(net.ppt_layers)
    k = min(5, num_classes)
    total_batches = dataset.get_dataset_size()
    bar = _Progress(desc, total_batches) if progress else None

    top1 = top5 = images = rows = batches = 0
    loss_sum = 0.0
    pooled_count = np.zeros(num_layers, np.int64)
    svar_sum = np.zeros(num_layers, np.float64)
    first_batch = forward = 0.0
    first_rows = 0
    was_training = net.training
    net.set_train(False)
    start = time.perf_counter()
    try:
        for batch in _batches(dataset):
            if len(batch) != 3:
                raise ValueError(f"{desc}: expected eval batches (image, label, valid), got {len(batch)} "
                                 f"columns; build the pipeline with create_dataset(..., training=False)")
            image, label, valid = batch
            t0 = time.perf_counter()
            logits, pooled, svar = (out.asnumpy() for out in stats(Tensor(image, ms.float32)))
            spent = time.perf_counter() - t0
            if batches == 0:
                first_batch, first_rows = spent, len(label)
            else:
                forward += spent
            batches += 1
            rows += len(label)

            keep = valid.astype(bool)
            label = label[keep].astype(np.int64)
            outside = label[(label < 0) | (label >= num_classes)]
            if outside.size:
                raise ValueError(f"{desc}: label {int(outside[0])} is outside the model's {num_classes} classes")
            hit1, hit5, loss = _batch_metrics(logits[keep], label, k)
            top1 += int(hit1.sum())
            top5 += int(hit5.sum())
            loss_sum += float(loss.sum())
            images += int(keep.sum())
            pooled_count += pooled[keep].sum(axis=0)
            svar_sum += svar[keep].astype(np.float64).sum(axis=0)
            if bar:
                bar.update(batches, images, time.perf_counter() - start)
    except BaseException:
        if bar:
            bar.close()
        raise
    finally:
        net.set_train(was_training)
    seconds = time.perf_counter() - start
    if bar:
        bar.update(batches, images, seconds, final=True)
    if images == 0:
        raise ValueError(f"{desc}: no valid image in {rows} rows (all padding or unreadable files)")

    if batches == 1:
        forward, timed_rows = first_batch, rows
    else:
        timed_rows = rows - first_rows
    return {
        "top1": 100.0 * top1 / images,
        "top5": 100.0 * top5 / images,
        "loss": loss_sum / images,
        "num_images": images,
        "seconds": seconds,
        "images_per_sec": images / seconds,
        "first_batch_seconds": first_batch,
        "forward_seconds": forward,
        "forward_images_per_sec": timed_rows / forward if forward > 0 else 0.0,
        "macs": int(count_macs(net)["total"]),
        "ppt_layers": list(net.ppt_layers),
        "pooled_fraction": (pooled_count / images).tolist(),
        "pruned_fraction": (1.0 - pooled_count / images).tolist(),
        "svar_mean": (svar_sum / images).tolist(),
    }


def format_comparison(results: Dict[str, Dict[str, Any]]) -> str:
    """A text table with one column per result of :func:`evaluate` (e.g. ``{"baseline": ..., "PPT": ...}``).

    Rows: top-1, top-5, loss, GMACs, model and end-to-end images/s, then the changes relative to the first
    column: top-1 difference (points), forward speed-up and MACs reduction (first column's MACs / this one's).
    """
    if not results:
        raise ValueError("format_comparison: no results to compare")
    names = list(results)
    ref = results[names[0]]
    rows: List[List[str]] = [
        ["top-1 (%)"] + [f"{r['top1']:.2f}" for r in results.values()],
        ["top-5 (%)"] + [f"{r['top5']:.2f}" for r in results.values()],
        ["loss"] + [f"{r['loss']:.4f}" for r in results.values()],
        ["GMACs / image"] + [f"{r['macs'] / 1e9:.4g}" for r in results.values()],
        ["images/s (model)"] + [f"{r['forward_images_per_sec']:.1f}" for r in results.values()],
        ["images/s (end to end)"] + [f"{r['images_per_sec']:.1f}" for r in results.values()],
        [f"top-1 vs {names[0]} (pts)"] + [f"{r['top1'] - ref['top1']:+.2f}" for r in results.values()],
        [f"speed-up vs {names[0]}"] + [_ratio(r["forward_images_per_sec"], ref["forward_images_per_sec"])
                                       for r in results.values()],
        [f"MACs reduction vs {names[0]}"] + [_ratio(ref["macs"], r["macs"]) for r in results.values()],
    ]
    header = [""] + names
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ratio(num: float, den: float) -> str:
    return f"{num / den:.2f}x" if den > 0 else "n/a"


def evaluate_checkpoint(cfg: Dict[str, Any], ckpt_file: str, *, split: str = "val", strict: bool = False,
                        compare_baseline: bool = False, progress: bool = True) -> Dict[str, Any]:
    """What ``eval.py`` does: evaluate the configured model with ``ckpt_file`` on ``<data.path>/<split>``.

    Args:
        cfg: a config from ``src.config.load_config`` (``data.path`` may be ``"demo"``).
        ckpt_file: the weights, loaded strictly.
        split: the split folder.
        strict: stop at the first unreadable image instead of reporting it and leaving it out.
        compare_baseline: also evaluate the same weights without PPT, first, so the results hold
            ``"baseline"`` then ``"PPT"``; needs ``ppt.enabled``.
        progress: show progress on stderr.

    Returns:
        A JSON-ready report: ``checkpoint``, ``data_root``, ``split``, ``num_classes``, ``num_files``
        (image files in the split), ``num_images`` (evaluated), ``unreadable_files`` (``{"path",
        "reason"}``), ``ignored_files`` (non-image files), ``results`` (name -> :func:`evaluate` dict; the
        name is ``"PPT"``, or ``"baseline"`` for a config with ``ppt.enabled: false``).
    """
    # Imported here: src.cli and src.data load the data pipeline, which plain users of evaluate() do not need.
    from .cli import UsageError, build_model
    from .data import create_dataset, resolve_data_root

    enabled = cfg["ppt"]["enabled"]
    if compare_baseline and not enabled:
        raise UsageError("--compare-baseline: the config has ppt.enabled: false, so the model already is the "
                         "baseline; enable PPT to compare")
    model = build_model(cfg, ckpt_file)
    data = cfg["data"]
    dataset, info = create_dataset(
        resolve_data_root(data["path"]), split, model.img_size, data["batch_size"], crop_pct=data["crop_pct"],
        interpolation=data["interpolation"], mean=data["mean"], std=data["std"],
        num_workers=data["num_workers"], strict=strict, num_classes=model.num_classes)
    models = {"PPT" if enabled else "baseline": model}
    if compare_baseline:
        models = {"baseline": build_model(cfg, ckpt_file, with_ppt=False), **models}
    results = {name: evaluate(net, dataset, progress=progress, desc=name) for name, net in models.items()}
    return {
        "checkpoint": os.fspath(ckpt_file),
        "data_root": str(info.root.parent),
        "split": split,
        "num_classes": info.num_classes,
        "num_files": info.num_images,
        "num_images": next(iter(results.values()))["num_images"],
        "unreadable_files": [{"path": path, "reason": reason} for path, reason in info.bad_files()],
        "ignored_files": [str(p) for p in info.ignored_files],
        "results": results,
    }


def format_report(report: Dict[str, Any]) -> str:
    """The human-readable summary of :func:`evaluate_checkpoint`'s report (the comparison table included
    when there are several results)."""
    lines = [f"data: {report['data_root']}/{report['split']}: {report['num_classes']} classes, "
             f"{report['num_files']} image files, {report['num_images']} evaluated"]
    bad = report["unreadable_files"]
    if bad:
        lines.append(f"unreadable files, not counted: {len(bad)}")
        lines += [f"  {item['path']}: {item['reason']}" for item in bad]
    if report["ignored_files"]:
        lines.append(f"non-image files ignored: {len(report['ignored_files'])}")
    for name, r in report["results"].items():
        lines.append(f"[{name}] top-1 {r['top1']:.2f} %  top-5 {r['top5']:.2f} %  loss {r['loss']:.4f}  "
                     f"GMACs/image {r['macs'] / 1e9:.4g}  images/s {r['forward_images_per_sec']:.1f} (model), "
                     f"{r['images_per_sec']:.1f} (end to end, {r['seconds']:.1f} s)")
        for layer, pooled, svar in zip(r["ppt_layers"], r["pooled_fraction"], r["svar_mean"]):
            lines.append(f"  PP block {layer}: {100 * pooled:.1f} % of images pooled, {100 * (1 - pooled):.1f} % "
                         f"pruned (mean score variance {svar:.3g})")
    if len(report["results"]) > 1:
        lines += ["", format_comparison(report["results"])]
    return "\n".join(lines)
