"""Evaluation loop: accuracy, cross-entropy, throughput and PPT statistics, plus a side-by-side table.

:func:`evaluate` runs a model over an eval pipeline from :func:`src.data.create_dataset` (batches
``(image, label, valid)``; rows with ``valid == 0`` -- padding and unreadable files -- are excluded from every
metric) and returns a flat dict of plain Python numbers, ready for JSON. :func:`format_comparison` renders
several such dicts (e.g. the baseline and the PPT model) as a text table. Per class ("which classes does PPT
hurt?"): ``evaluate(..., per_class=True)`` also counts the confusion matrix, :func:`evaluate_checkpoint` turns it
into top-1 per named class, :func:`format_per_class` prints it and :func:`plot_confusion` draws it.

Timing. ``seconds`` / ``images_per_sec`` are end to end (data pipeline + model, including the graph compile
of the first batch). ``forward_seconds`` / ``forward_images_per_sec`` time the model alone (input copy,
forward, copy back of the outputs) over every batch but the first, whose time -- the graph compile in graph
mode -- is ``first_batch_seconds``; with a single batch that first batch is all there is to time. Forward
throughput counts every row of a batch, padding included, since the model computes them all.
"""
import copy
import io
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, TextIO

import mindspore as ms
import numpy as np
from mindspore import Tensor

from .class_names import describe_difference
from .config import model_kwargs
from .data import DatasetInfo
from .deploy import Predictor, Preprocess, check_config_model, runtime_for
from .deploy.inference import ClassNames, preprocess_from_config, resolve_class_names
from .factory import build_model, dataset_from_config
from .fileio import write_bytes_atomic
from .flops import count_macs
from .models import PPTStats, VisionTransformer, create_model
from .timing import timed_call
from .token_reduction import get_policy

__all__ = ["evaluate", "format_comparison", "format_table", "unwrap_pipeline_error", "evaluate_checkpoint",
           "evaluate_exported", "per_class_results", "format_report", "format_per_class", "plot_confusion"]

# "ValueError: <message>" lines in the Python stack MindSpore embeds in its pipeline errors.
_USER_ERROR = re.compile(r"^(?:[A-Za-z_][\w.]*)?(?:Error|Exception): (?!Traceback)(.+)$", re.MULTILINE)


def unwrap_pipeline_error(exc: RuntimeError) -> str | None:
    """The message of the Python exception a dataset source raised, from MindSpore's multi-line wrapper.

    ``mindspore.dataset`` re-raises an error of a Python source (e.g. the unreadable image of a strict eval
    pipeline) as a ``RuntimeError`` carrying both call stacks; the last ``SomeError: message`` line of it is
    the source's own message. Returns None when there is none (a genuine runtime failure).
    """
    found = _USER_ERROR.findall(str(exc))
    return found[-1].strip() if found else None


class _Progress:
    """Progress on stderr: one ``\\r``-updated line on a terminal, else a plain line every ``every`` s."""

    def __init__(self, desc: str, total: int, stream: TextIO | None = None, every: float = 10.0):
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


def _batches(dataset: Any) -> Iterator[tuple[np.ndarray, ...]]:
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
    """Per row: predicted class, top-1 hit, top-k hit, cross-entropy (float64)."""
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = -log_prob[np.arange(len(label)), label]
    # A stable sort puts the first of tied maxima first, as argmax does.
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    hits = top == label[:, None]
    return top[:, 0], hits[:, 0], hits.any(axis=1), loss


class _Totals:
    """Running sums of one evaluation, over the valid rows only."""

    def __init__(self, num_classes: int, num_layers: int, per_class: bool = False):
        self.num_classes, self.k = num_classes, min(5, num_classes)
        # [true class, predicted class] image counts
        self.confusion = np.zeros((num_classes, num_classes), np.int64) if per_class else None
        self.top1 = self.top5 = self.images = self.rows = self.batches = 0
        self.loss = 0.0
        self.pooled = np.zeros(num_layers, np.int64)
        self.svar = np.zeros(num_layers, np.float64)
        self.first_batch = self.forward = 0.0
        self.first_rows = 0

    def add(self, outputs: tuple[np.ndarray, ...], label: np.ndarray, valid: np.ndarray, seconds: float,
            desc: str) -> None:
        logits, pooled, svar = outputs
        if self.batches == 0:
            self.first_batch, self.first_rows = seconds, len(label)
        else:
            self.forward += seconds
        self.batches += 1
        self.rows += len(label)
        keep = valid.astype(bool)
        label = label[keep].astype(np.int64)
        outside = label[(label < 0) | (label >= self.num_classes)]
        if outside.size:
            raise ValueError(f"{desc}: label {int(outside[0])} is outside the model's {self.num_classes} classes")
        pred, hit1, hit5, loss = _batch_metrics(logits[keep], label, self.k)
        if self.confusion is not None:
            np.add.at(self.confusion, (label, pred), 1)
        self.top1, self.top5 = self.top1 + int(hit1.sum()), self.top5 + int(hit5.sum())
        self.loss += float(loss.sum())
        self.images += int(keep.sum())
        self.pooled += pooled[keep].sum(axis=0)
        self.svar += svar[keep].astype(np.float64).sum(axis=0)

    def timing(self, seconds: float) -> dict[str, float]:
        forward, timed_rows = self.forward, self.rows - self.first_rows
        if self.batches == 1:  # the first (compiling) batch is all there is to time
            forward, timed_rows = self.first_batch, self.rows
        return {"seconds": seconds, "images_per_sec": self.images / seconds, "first_batch_seconds": self.first_batch,
                "forward_seconds": forward, "forward_images_per_sec": timed_rows / forward if forward > 0 else 0.0}


def _mindspore_input(image: np.ndarray) -> Tensor:
    return Tensor(image, ms.float32)


def _run(stats: Callable[[Any], Any], dataset: Any, totals: _Totals, bar: _Progress | None, desc: str,
         prepare: Callable[[np.ndarray], Any] = _mindspore_input) -> float:
    """Every batch of ``dataset`` through ``stats`` (outputs: logits, pooled, score variance) into ``totals``;
    ``prepare`` turns a batch of images into its input. Returns the seconds it took."""
    start = time.perf_counter()
    try:
        for batch in _batches(dataset):
            if len(batch) != 3:
                raise ValueError(f"{desc}: expected eval batches (image, label, valid), got {len(batch)} "
                                 f"columns; build the pipeline with create_dataset(..., training=False)")
            image, label, valid = batch
            outputs, seconds = timed_call(stats, prepare(image))
            totals.add(outputs, label, valid, seconds, desc)
            if bar:
                bar.update(totals.batches, totals.images, time.perf_counter() - start)
    except BaseException:
        if bar:
            bar.close()
        raise
    seconds = time.perf_counter() - start
    if bar:
        bar.update(totals.batches, totals.images, seconds, final=True)
    return seconds


def evaluate(model: VisionTransformer | PPTStats, dataset: Any, *, progress: bool = True,
             desc: str = "eval", per_class: bool = False) -> dict[str, Any]:
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
        per_class: also return the confusion matrix.

    Returns:
        ``top1``, ``top5`` (percent; top-5 is top-``num_classes`` for fewer than 5 classes), ``loss`` (mean
        cross-entropy), ``num_images`` (rows with ``valid == 1``), ``seconds``, ``images_per_sec``,
        ``first_batch_seconds``, ``forward_seconds``, ``forward_images_per_sec`` (see the module docstring),
        ``macs`` (per image, ``count_macs(model)["total"]``), ``ppt_layers`` (PP block indices),
        ``pooled_fraction`` / ``pruned_fraction`` (per PP block, the share of images pooled / pruned there)
        and ``svar_mean`` (per PP block, the mean score variance that decided it; None for a policy that
        computes none, such as ``pool``); with ``per_class``, ``confusion``: ``[num_classes][num_classes]``
        image counts, row = true class, column = predicted class (the top-1 prediction).

    Raises:
        ValueError: the batches do not have the eval columns, a label is outside the model's classes, no
            row is valid, or the pipeline's source failed (e.g. an unreadable image in strict mode; the
            message is the source's own, naming the file).
    """
    stats = model if isinstance(model, PPTStats) else PPTStats(model)
    net = stats.model
    totals = _Totals(net.num_classes, len(net.ppt_layers), per_class)
    bar = _Progress(desc, dataset.get_dataset_size()) if progress else None
    was_training = net.training
    net.set_train(False)
    try:
        seconds = _run(stats, dataset, totals, bar, desc)
    finally:
        net.set_train(was_training)
    reports_variance = net.ppt is not None and get_policy(net.ppt.policy).reports_variance
    return _result(totals, seconds, int(count_macs(net)["total"]), net.ppt_layers, reports_variance, desc)


def _result(totals: _Totals, seconds: float, macs: int, ppt_layers: Sequence[int], reports_variance: bool,
            desc: str) -> dict[str, Any]:
    """:func:`evaluate`'s result dict from the running sums."""
    images = totals.images
    if images == 0:
        raise ValueError(f"{desc}: no valid image in {totals.rows} rows (all padding or unreadable files)")
    confusion = {} if totals.confusion is None else {"confusion": totals.confusion.tolist()}
    return {
        "top1": 100.0 * totals.top1 / images, "top5": 100.0 * totals.top5 / images, "loss": totals.loss / images,
        "num_images": images, **totals.timing(seconds), "macs": macs,
        "ppt_layers": list(ppt_layers), "pooled_fraction": (totals.pooled / images).tolist(),
        "pruned_fraction": (1.0 - totals.pooled / images).tolist(),
        "svar_mean": (totals.svar / images).tolist() if reports_variance else None, **confusion,
    }


def format_comparison(results: dict[str, dict[str, Any]]) -> str:
    """A text table with one column per result of :func:`evaluate` (e.g. ``{"baseline": ..., "PPT": ...}``).

    Rows: top-1, top-5, loss, GMACs, model and end-to-end images/s, then the changes relative to the first
    column: top-1 difference (points), forward speed-up and MACs reduction (first column's MACs / this one's).
    """
    if not results:
        raise ValueError("format_comparison: no results to compare")
    names = list(results)
    ref = results[names[0]]
    rows: list[list[str]] = [
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
    return format_table([""] + names, rows)


def format_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Aligned text columns under a dashed rule; the first ``left`` columns flush left, the others right."""
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ratio(num: float, den: float) -> str:
    return f"{num / den:.2f}x" if den > 0 else "n/a"


def _label_names(pre: Preprocess, model_file: str | os.PathLike, info: DatasetInfo,
                 class_names_file: str | None) -> ClassNames:
    """The model's class names for the report (the eval split's class folders name them unless a names file or
    the model file, whose stored names ``pre`` holds, does). Warns when the stored names and the folders share
    names but not their order: then label ``i`` of the data is not class ``i`` of the model."""
    pre = replace(pre, data_path=str(info.root.parent))
    stored, folders = pre.class_names, tuple(info.classes)
    if stored is not None and set(stored) & set(folders) and stored != folders:
        warnings.warn(f"{info.root}: the class folders (the labels, in sorted order) are not the class names stored "
                      f"in {model_file} ({describe_difference(folders, stored)}): a label may not be the model's "
                      f"class of that name", stacklevel=2)
    return resolve_class_names(info.num_classes, pre, class_names_file, model=os.fspath(model_file),
                               splits=(info.split,))


def per_class_results(confusion: list[list[int]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Per class, from a confusion matrix of :func:`evaluate`: ``class`` (index), ``name``, ``images`` (of that
    true class) and ``top1`` (percent of them predicted as it; None without images)."""
    matrix = np.asarray(confusion, np.int64)
    rows = []
    for i, name in enumerate(names):
        images = int(matrix[i].sum())
        rows.append({"class": i, "name": name, "images": images,
                     "top1": 100.0 * int(matrix[i, i]) / images if images else None})
    return rows


def evaluate_checkpoint(cfg: dict[str, Any], ckpt_file: str, *, split: str = "val", strict: bool = False,
                        compare_baseline: bool = False, progress: bool = True, per_class: bool = False,
                        class_names_file: str | None = None) -> dict[str, Any]:
    """What ``eval.py`` does: evaluate the configured model with ``ckpt_file`` on ``<data.path>/<split>``.

    Args:
        cfg: a config from ``src.config.load_config`` (``data.path`` may be ``"demo"``).
        ckpt_file: the weights, loaded strictly.
        split: the split folder.
        strict: stop at the first unreadable image instead of reporting it and leaving it out.
        compare_baseline: also evaluate the same weights without PPT, first, so the results hold
            ``"baseline"`` then ``"PPT"``; needs ``ppt.enabled``.
        progress: show progress on stderr.
        per_class: also report top-1 per class with its name, and the confusion matrix.
        class_names_file: names of the classes, one per line (default: those stored in the checkpoint, else
            the split's class folders; see :func:`src.deploy.inference.resolve_class_names`).

    Returns:
        A JSON-ready report: ``checkpoint``, ``data_root``, ``split``, ``num_classes``, ``num_files``
        (image files in the split), ``num_images`` (evaluated), ``unreadable_files`` (``{"path",
        "reason"}``), ``ignored_files`` (non-image files), ``results`` (name -> :func:`evaluate` dict; the
        name is ``"PPT"``, or ``"baseline"`` for a config with ``ppt.enabled: false``). With ``per_class``
        also ``class_names``, ``class_names_source``, and per result ``confusion`` and ``per_class``
        (:func:`per_class_results`).
    """
    enabled = cfg["ppt"]["enabled"]
    if compare_baseline and not enabled:
        raise ValueError("comparing with the baseline: the config has ppt.enabled: false, so the model already "
                         "is the baseline; enable PPT to compare")
    model = build_model(cfg, ckpt_file)
    dataset, info = dataset_from_config(cfg, split, strict=strict)
    # Before the minutes of evaluating.
    names = _label_names(preprocess_from_config(cfg, ckpt_file), ckpt_file, info, class_names_file)
    models = {"PPT" if enabled else "baseline": model}
    if compare_baseline:
        models = {"baseline": build_model(cfg, ckpt_file, with_ppt=False), **models}
    results = {name: evaluate(net, dataset, progress=progress, desc=name, per_class=per_class)
               for name, net in models.items()}
    return _dataset_report({"checkpoint": os.fspath(ckpt_file)}, split, info, results, names if per_class else None)


def _dataset_report(head: dict[str, Any], split: str, info: DatasetInfo, results: dict[str, dict[str, Any]],
                    names: ClassNames | None) -> dict[str, Any]:
    """The report of :func:`evaluate_checkpoint` and :func:`evaluate_exported`: ``head`` (the model file), the
    data, the results and, with ``names``, the per-class results."""
    report = {
        **head,
        "data_root": str(info.root.parent),
        "split": split,
        "num_classes": info.num_classes,
        "num_files": info.num_images,
        "num_images": next(iter(results.values()))["num_images"],
        "unreadable_files": [{"path": path, "reason": reason} for path, reason in info.bad_files()],
        "ignored_files": [str(p) for p in info.ignored_files],
        "results": results,
    }
    if names is not None:
        report.update(class_names=list(names.names), class_names_source=names.source)
        for result in results.values():
            result["per_class"] = per_class_results(result["confusion"], names.names)
    return report


class _LogitsOnly:
    """An exported file as an evaluated model: its logits, and no PP-block decisions (the file returns logits
    only)."""

    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(batch)
        return self.predictor(batch), np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)


def _exported_config(cfg: dict[str, Any], predictor: Predictor) -> dict[str, Any]:
    """``cfg`` with the file's batch size and, when the file stores them, its preprocessing settings (what the
    deployed model expects); a config whose model is not the exported one is an error."""
    cfg = copy.deepcopy(cfg)
    cfg["data"]["batch_size"] = predictor.batch_size
    pre = predictor.preprocess
    if pre is not None:
        cfg["data"].update(crop_pct=pre.crop_pct, interpolation=pre.interpolation, mean=list(pre.mean),
                           std=list(pre.std))
    check_config_model(cfg, predictor)
    return cfg


def evaluate_exported(cfg: dict[str, Any], model_file: str | os.PathLike, *, split: str = "val",
                      strict: bool = False, progress: bool = True, per_class: bool = False,
                      class_names_file: str | None = None, threads: int | None = None) -> dict[str, Any]:
    """What ``eval.py --model FILE`` does: the accuracy of a deployed file (``.onnx``, ``.mindir``, any file a
    registered runtime opens without a config) on ``<data.path>/<split>``, in the file's batch size.

    The data settings come from ``cfg`` (``data.path``, workers), the preprocessing from the file when it
    stores it (else ``cfg``'s), ``macs`` from the configured model, which must have the file's image size and
    classes. The report is :func:`evaluate_checkpoint`'s with the runtime's name (``onnx``, ``mindir``) instead
    of ``checkpoint``; one result named by the runtime's label (``ONNX``, ``MindIR``), without PP-block
    statistics (``ppt_layers`` empty: the file returns logits only). ``threads``: the runtime's intra-op threads.
    """
    runtime = runtime_for(model_file)
    if runtime.needs_config:
        raise ValueError(f"{model_file}: weights, not an exported file; evaluate them as a checkpoint")
    predictor = runtime.open(model_file, threads=threads)
    cfg = _exported_config(cfg, predictor)
    dataset, info = dataset_from_config(cfg, split, strict=strict)
    names = _label_names(replace(preprocess_from_config(cfg), class_names=predictor.class_names), model_file, info,
                         class_names_file)
    totals = _Totals(predictor.num_classes, 0, per_class)
    bar = _Progress(runtime.label, dataset.get_dataset_size()) if progress else None
    seconds = _run(_LogitsOnly(predictor), dataset, totals, bar, runtime.label, prepare=np.ascontiguousarray)
    macs = int(count_macs(create_model(**model_kwargs(cfg)))["total"])
    result = _result(totals, seconds, macs, (), False, runtime.label)
    return _dataset_report({runtime.name: os.fspath(model_file)}, split, info, {runtime.label: result},
                           names if per_class else None)


def format_report(report: dict[str, Any]) -> str:
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
        svars = r["svar_mean"] or [None] * len(r["ppt_layers"])
        for layer, pooled, svar in zip(r["ppt_layers"], r["pooled_fraction"], svars):
            variance = "" if svar is None else f" (mean score variance {svar:.3g})"
            lines.append(f"  PP block {layer}: {100 * pooled:.1f} % of images pooled, {100 * (1 - pooled):.1f} % "
                         f"pruned{variance}")
    if len(report["results"]) > 1:
        lines += ["", format_comparison(report["results"])]
    if "class_names" in report:
        lines += ["", f"top-1 per class (names: {report['class_names_source']}):", format_per_class(report["results"])]
    return "\n".join(lines)


def format_per_class(results: dict[str, dict[str, Any]]) -> str:
    """Top-1 per class of :func:`evaluate_checkpoint`'s ``per_class`` results, one column per result. With
    several results a last column gives the change of the last against the first, and the classes it hurts
    most come first; otherwise the classes are in index order."""
    names = list(results)
    rows = [tuple(cells) for cells in zip(*(results[n]["per_class"] for n in names))]  # per class, one per result
    header = ["class", "name", "images"] + [f"{n} top-1 %" for n in names]
    if len(names) > 1:
        header.append(f"{names[-1]} vs {names[0]} (pts)")
        # Classes without images (no change to rank) last; ties in class order.
        rows.sort(key=lambda row: (row[0]["top1"] is None, _change(row) or 0.0, row[0]["class"]))
    table = []
    for row in rows:
        first = row[0]
        cells = [str(first["class"]), _short(first["name"]), str(first["images"])]
        cells += ["-" if c["top1"] is None else f"{c['top1']:.2f}" for c in row]
        if len(names) > 1:
            cells.append("-" if first["top1"] is None else f"{_change(row):+.2f}")
        table.append(cells)
    return format_table(header, table, left=2)


def _change(row: tuple[dict[str, Any], ...]) -> float | None:
    return None if row[0]["top1"] is None else row[-1]["top1"] - row[0]["top1"]


def _short(name: str, width: int = 32) -> str:
    return name if len(name) <= width else name[:width - 3] + "..."


def plot_confusion(report: dict[str, Any], path: str | os.PathLike) -> None:
    """The confusion matrices of a ``per_class`` report as one PNG, one panel per result; each row is a true
    class, coloured by the share of its images predicted as each class. Written atomically."""
    import matplotlib  # late: only plotting needs it

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    names, results = report["class_names"], report["results"]
    side = 4.5 + 0.12 * min(len(names), 30)
    fig, axes = plt.subplots(1, len(results), figsize=(side * len(results) + 1.0, side), dpi=100, squeeze=False)
    for ax, (label, result) in zip(axes[0], results.items()):
        counts = np.asarray(result["confusion"], np.float64)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        image = ax.imshow(shares, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
        ax.set_title(f"{label}: top-1 {result['top1']:.2f} %")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        if len(names) <= 30:  # more names would overlap
            ticks = np.arange(len(names))
            ax.set_xticks(ticks, [_short(n, 16) for n in names], rotation=90, fontsize=7)
            ax.set_yticks(ticks, [_short(n, 16) for n in names], fontsize=7)
    fig.colorbar(image, ax=axes[0].tolist(), label="share of the true class's images")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue(), make_parents=True)
