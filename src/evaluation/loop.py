"""The evaluation loop: accuracy, cross-entropy, throughput and PPT statistics of a model (or of any predictor)
over an eval pipeline; the numbers :mod:`src.evaluation.report` prints and :mod:`src.evaluation.entry` saves.

:func:`evaluate` runs a model over an eval pipeline from :func:`src.data.create_dataset` (batches
``(image, label, valid)``; rows with ``valid == 0`` -- padding and unreadable files -- are excluded from every
metric) and returns a flat dict of plain Python numbers, ready for JSON. Per class ("which classes does PPT
hurt?"): ``evaluate(..., per_class=True)`` also counts the confusion matrix, :func:`evaluate_checkpoint` turns it
into top-1 per named class, :func:`format_per_class` prints it and :func:`plot_confusion` draws it.

Timing. ``seconds`` / ``images_per_sec`` are end to end (data pipeline + model, including the graph compile
of the first batch). ``forward_seconds`` / ``forward_images_per_sec`` time the model alone (input copy,
forward, copy back of the outputs) over every batch but the first, whose time -- the graph compile in graph
mode -- is ``first_batch_seconds``; with a single batch that first batch is all there is to time. Forward
throughput counts every row of a batch, padding included, since the model computes them all.
"""
import math
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import mindspore as ms
import numpy as np
from mindspore import Tensor

from ..flops import count_macs
from ..models import PPTStats, VisionTransformer
from ..timing import timed_call
from ..token_reduction import get_policy

__all__ = ["evaluate", "evaluate_logits", "unwrap_pipeline_error"]

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


class _LogitsOnly:
    """A logits-only predictor as an evaluated model: no PP-block decisions (an exported file returns logits
    only)."""

    def __init__(self, predictor: Callable[[np.ndarray], np.ndarray]):
        self.predictor = predictor

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(batch)
        return self.predictor(batch), np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32)


def evaluate_logits(predictor: Callable[[np.ndarray], np.ndarray], num_classes: int, dataset: Any, *, desc: str,
                    macs: int, progress: bool = True, per_class: bool = False) -> dict[str, Any]:
    """:func:`evaluate` for a predictor that maps a numpy batch to logits only (an exported file in its runtime):
    the same result dict, without PP-block statistics; ``macs`` is the per-image figure to report."""
    totals = _Totals(num_classes, 0, per_class)
    bar = _Progress(desc, dataset.get_dataset_size()) if progress else None
    seconds = _run(_LogitsOnly(predictor), dataset, totals, bar, desc, prepare=np.ascontiguousarray)
    return _result(totals, seconds, macs, (), False, desc)


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
