"""``create_dataset``: ImageNet-layout folder -> batched ``mindspore.dataset`` pipeline.

Pipeline: ``GeneratorDataset`` over a random-access Python source (PIL decode) -> ``map`` with
``mindspore.dataset.vision`` ops -> ``batch`` (-> a batch-level augmentation ``map`` when training).

The source runs in threads (``python_multiprocessing=False``) so that the unreadable files it records are
visible to the caller through ``DatasetInfo.bad_files()``; PIL releases the GIL while decoding and the
resize/normalise ops run in C++, so threads do not serialise the heavy work.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import mindspore.dataset as ds

from .folder import FolderScan, check_num_classes, load_rgb, scan_image_folder
from .transforms import (IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS, BatchAugment, eval_transforms,
                         resolve_aug, train_transforms)

__all__ = ["DatasetInfo", "create_dataset", "EVAL_COLUMNS", "TRAIN_COLUMNS"]

EVAL_COLUMNS = ("image", "label", "valid")
TRAIN_COLUMNS = ("image", "label")


class _BadFileLog:
    """Thread-safe record of unreadable files (path -> reason); a file seen again is kept once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, str] = {}

    def add(self, path: str, reason: str) -> None:
        with self._lock:
            self._items[path] = reason

    def items(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._items.items())


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _EvalSource:
    """Item ``k`` -> ``(image uint8 [H, W, 3], label int32, valid int32)`` for one shard.

    Items past the shard's images are padding rows; they and unreadable files are a blank image with
    ``valid=0`` (padding rows carry label 0, unreadable files their true label).
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], indices: Sequence[int], length: int,
                 blank_size: int, strict: bool, log: _BadFileLog):
        self.samples = samples
        self.indices = indices
        self.length = length
        self.blank = np.zeros((blank_size, blank_size, 3), dtype=np.uint8)
        self.strict = strict
        self.log = log

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.int32, np.int32]:
        if k >= len(self.indices):
            return self.blank, np.int32(0), np.int32(0)
        path, label = self.samples[self.indices[k]]
        try:
            image = load_rgb(path)
        # Broad on purpose: PIL raises many exception types for corrupt files, and every failure is
        # either raised (strict) or recorded with its reason, never dropped.
        except Exception as exc:  # pylint: disable=broad-except
            if self.strict:
                raise ValueError(f"{path}: unreadable image ({_describe(exc)})") from exc
            self.log.add(str(path), _describe(exc))
            return self.blank, np.int32(label), np.int32(0)
        return image, np.int32(label), np.int32(1)


class _TrainSource:
    """Item ``i`` -> ``(image uint8 [H, W, 3], label int32)``; an unreadable file raises with its path."""

    def __init__(self, samples: Sequence[tuple[Path, int]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.int32]:
        path, label = self.samples[i]
        try:
            image = load_rgb(path)
        except Exception as exc:  # pylint: disable=broad-except
            raise ValueError(f"{path}: unreadable training image ({_describe(exc)})") from exc
        return image, np.int32(label)


class _EpochSampler:
    """Per-epoch index order: a permutation of ``range(n)`` seeded by ``(seed, epoch)`` (the same on every
    shard), or ``range(n)`` unshuffled, then every ``num_shards``-th index from ``shard_id``, cut to
    ``per_shard`` so all shards yield the same count.
    """

    def __init__(self, n: int, shuffle: bool, seed: int, num_shards: int, shard_id: int, per_shard: int):
        self.n = n
        self.shuffle = shuffle
        self.seed = seed
        self.num_shards = num_shards
        self.shard_id = shard_id
        self.per_shard = per_shard
        self._epoch = 0

    def __len__(self) -> int:
        return self.per_shard

    def __iter__(self) -> Iterator[int]:
        # A generator, so the epoch counter only advances once iteration really starts: MindSpore calls
        # __iter__ while building the pipeline without consuming the result.
        epoch = self._epoch
        self._epoch += 1
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        yield from order[self.shard_id::self.num_shards][:self.per_shard].tolist()


@dataclass
class DatasetInfo:
    """What ``create_dataset`` built.

    Attributes:
        root: the split folder scanned (``<root>/<split>``).
        split: the split name.
        classes: class names in label order.
        num_classes: ``len(classes)``.
        num_images: image files in the split (all shards).
        num_shard_images: real images this shard yields per epoch, before ``drop_remainder``.
        num_dropped: of those, images left out of every epoch by ``drop_remainder``.
        num_ignored: non-image files skipped while scanning (paths in ``ignored_files``).
        ignored_files: those paths.
        batch_size: rows per batch.
        num_batches: batches per epoch for this shard.
        columns: output column names: ``("image", "label", "valid")`` for eval, ``("image", "label")`` for
            training.
        training: whether this is the training pipeline.
        soft_targets: whether ``label`` is float32 ``[B, num_classes]`` (else int32 ``[B]``).
        aug: the resolved augmentation options (training only, else None).
        samples: ``(path, label)`` of every image of the split, in scan order.
    """

    root: Path
    split: str
    classes: tuple[str, ...]
    num_classes: int
    num_images: int
    num_shard_images: int
    num_dropped: int
    num_ignored: int
    ignored_files: tuple[Path, ...]
    batch_size: int
    num_batches: int
    columns: tuple[str, ...]
    training: bool
    soft_targets: bool
    aug: dict[str, Any] | None
    samples: tuple[tuple[Path, int], ...] = field(repr=False)
    _bad_files: _BadFileLog = field(repr=False)

    def bad_files(self) -> list[tuple[str, str]]:
        """Unreadable files met so far, as sorted ``(path, reason)`` pairs (eval with ``strict=False``).

        Each of them was yielded as a blank row with ``valid=0``; call this after the epoch to report them.
        """
        return self._bad_files.items()


def _check_int(name: str, value: Any, lo: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ValueError(f"create_dataset: {name} must be an int >= {lo}, got {value!r}")
    return value


def _check_stats(name: str, value: Any, positive: bool) -> tuple[float, float, float]:
    ok = (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 3
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
          and (not positive or all(v > 0 for v in value)))
    if not ok:
        kind = "3 positive numbers" if positive else "3 numbers"
        raise ValueError(f"create_dataset: {name} must be {kind}, got {value!r}")
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def _resolve_batching(training: bool, pad_last: bool | None, drop_remainder: bool | None,
                      strict: bool | None) -> tuple[bool, bool, bool]:
    if training:
        if pad_last:
            raise ValueError("create_dataset: pad_last=True is eval-only (padding rows would enter the loss)")
        if strict is False:
            raise ValueError("create_dataset: strict=False is eval-only; an unreadable training image "
                             "always raises")
        return False, True if drop_remainder is None else bool(drop_remainder), True
    pad = True if pad_last is None else bool(pad_last)
    drop = False if drop_remainder is None else bool(drop_remainder)
    if pad and drop:
        raise ValueError("create_dataset: pad_last=True and drop_remainder=True exclude each other "
                         "(pad_last already makes every batch full)")
    return pad, drop, bool(strict)


def create_dataset(root: str | os.PathLike, split: str, img_size: int, batch_size: int, *,
                   training: bool = False, crop_pct: float = 0.875, interpolation: str = "bicubic",
                   mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                   num_workers: int = 2, num_shards: int = 1, shard_id: int = 0, shuffle: bool | None = None,
                   seed: int = 0, strict: bool | None = None, pad_last: bool | None = None,
                   drop_remainder: bool | None = None, aug: Mapping[str, Any] | None = None,
                   num_classes: int | None = None) -> tuple[ds.Dataset, DatasetInfo]:
    """Build the eval or training pipeline for ``<root>/<split>/<class>/<image>``.

    Eval batches: ``image`` float32 ``[B, 3, img_size, img_size]``, ``label`` int32 ``[B]``, ``valid`` int32
    ``[B]`` (0 for padding rows and unreadable files -- mask them out of every metric). Training batches:
    ``image`` and ``label`` (int32 ``[B]``, or float32 ``[B, num_classes]`` soft targets when Mixup, CutMix
    or label smoothing is on; see ``src.data.transforms`` for the ``aug`` keys).

    Args:
        root: dataset root folder.
        split: split sub-folder name, e.g. ``"train"`` or ``"val"``.
        img_size: output height and width.
        batch_size: rows per batch.
        training: training pipeline (random augmentation, shuffling, drop_remainder) instead of eval.
        crop_pct: eval centre-crop fraction: the shorter side is resized to ``int(img_size / crop_pct)``.
        interpolation: ``"bicubic"`` (PIL-exact) or ``"bilinear"`` (PIL-exact in eval; OpenCV-style in the
            training crop).
        mean, std: per-channel normalisation statistics on the 0..1 scale.
        num_workers: parallel workers for decoding and for the per-image ops.
        num_shards, shard_id: data-parallel sharding. Eval shards take every ``num_shards``-th image
            (disjoint, together every image once); training shards take disjoint slices of each epoch's
            global permutation, ``num_images // num_shards`` images each.
        shuffle: default True for training, False for eval. The order is a permutation seeded by
            ``(seed, epoch)``. Per-image random ops (crop, flip, RandAugment) draw from MindSpore's dataset
            seed, ``mindspore.dataset.config.set_seed``, which the caller sets; the batch-level augmentation
            is seeded by ``(seed, shard_id)``.
        seed: see ``shuffle``.
        strict: eval only (default False): raise at the first unreadable file instead of yielding it as a
            ``valid=0`` row and recording it in ``info.bad_files()``. Training always raises.
        pad_last: eval only (default True): pad this shard's last batch with ``valid=0`` rows, and give
            every shard the same number of batches, so all batches have one shape (graph mode compiles
            once; data-parallel ranks stay in step) and no image is lost.
        drop_remainder: drop the last partial batch (default: True for training, False for eval). In eval
            this keeps shapes fixed too, but loses up to ``batch_size - 1`` images (``info.num_dropped``);
            prefer ``pad_last``. Without either, the last batch is smaller and graph mode compiles a second
            time.
        aug: training augmentation options (see ``src.data.transforms``); eval raises if given.
        num_classes: the model's class count; a different number of class folders is an error. Also the
            width of the soft targets (default: the number of class folders).

    Returns:
        ``(dataset, info)``: the batched ``mindspore.dataset`` pipeline and a :class:`DatasetInfo`.
    """
    _check_int("img_size", img_size, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("num_workers", num_workers, 1)
    _check_int("num_shards", num_shards, 1)
    _check_int("seed", seed, 0)
    if not isinstance(shard_id, int) or isinstance(shard_id, bool) or not 0 <= shard_id < num_shards:
        raise ValueError(f"create_dataset: shard_id must be an int in [0, {num_shards}), got {shard_id!r}")
    if not isinstance(crop_pct, (int, float)) or isinstance(crop_pct, bool) or not 0 < crop_pct <= 1:
        raise ValueError(f"create_dataset: crop_pct must be a number in (0, 1], got {crop_pct!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"create_dataset: interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                         f"got {interpolation!r}")
    mean = _check_stats("mean", mean, positive=False)
    std = _check_stats("std", std, positive=True)
    if aug is not None and not training:
        raise ValueError("create_dataset: aug is only used with training=True")
    if not isinstance(split, str) or not split:
        raise ValueError(f"create_dataset: split must be a folder name such as 'val', got {split!r}")
    pad, drop, strict = _resolve_batching(training, pad_last, drop_remainder, strict)
    shuffle = training if shuffle is None else bool(shuffle)

    scan: FolderScan = scan_image_folder(Path(root).expanduser() / split)
    if num_classes is not None:
        check_num_classes(scan.classes, num_classes, scan.root)
    else:
        num_classes = len(scan.classes)
    n = len(scan.samples)
    log = _BadFileLog()

    if training:
        resolved_aug = resolve_aug(aug)
        per_shard = n // num_shards
        if per_shard < (batch_size if drop else 1):
            raise ValueError(f"{scan.root}: {n} images give {per_shard} per shard ({num_shards} shards), "
                             f"too few for one batch of {batch_size}")
        source = _TrainSource(scan.samples)
        sampler = _EpochSampler(n, shuffle, seed, num_shards, shard_id, per_shard)
        dataset = ds.GeneratorDataset(source, list(TRAIN_COLUMNS), sampler=sampler,
                                      num_parallel_workers=num_workers, python_multiprocessing=False)
        dataset = dataset.map(train_transforms(img_size, interpolation, mean, std, resolved_aug),
                              input_columns=["image"], num_parallel_workers=num_workers)
        dataset = dataset.batch(batch_size, drop_remainder=drop)
        batch_aug = BatchAugment(num_classes, resolved_aug, seed=[seed, shard_id])
        if batch_aug.soft_targets or batch_aug.erase_prob > 0:
            # One worker: the batches then consume the seeded generator in a fixed order.
            dataset = dataset.map(batch_aug, input_columns=list(TRAIN_COLUMNS), num_parallel_workers=1)
        columns, soft, shard_images, rows = TRAIN_COLUMNS, batch_aug.soft_targets, per_shard, per_shard
    else:
        resolved_aug = None
        indices = list(range(shard_id, n, num_shards))
        if pad:
            # Every shard gets the batch count of the largest one, so data-parallel ranks stay in step.
            length = math.ceil(math.ceil(n / num_shards) / batch_size) * batch_size
        elif not indices:
            raise ValueError(f"{scan.root}: {n} images are fewer than num_shards={num_shards}; "
                             f"use pad_last=True")
        else:
            length = len(indices)
        if drop and length < batch_size:
            raise ValueError(f"{scan.root}: this shard has {length} images, too few for one batch of "
                             f"{batch_size} with drop_remainder=True")
        source = _EvalSource(scan.samples, indices, length, img_size, strict, log)
        sampler = _EpochSampler(length, True, seed, 1, 0, length) if shuffle else None
        dataset = ds.GeneratorDataset(source, list(EVAL_COLUMNS), sampler=sampler,
                                      shuffle=None if sampler else False, num_parallel_workers=num_workers,
                                      python_multiprocessing=False)
        dataset = dataset.map(eval_transforms(img_size, crop_pct, interpolation, mean, std),
                              input_columns=["image"], num_parallel_workers=num_workers)
        dataset = dataset.batch(batch_size, drop_remainder=drop)
        columns, soft, shard_images, rows = EVAL_COLUMNS, False, len(indices), length

    info = DatasetInfo(
        root=scan.root, split=split, classes=scan.classes, num_classes=num_classes, num_images=n,
        num_shard_images=shard_images, num_dropped=shard_images % batch_size if drop else 0,
        num_ignored=len(scan.ignored), ignored_files=scan.ignored, batch_size=batch_size,
        num_batches=rows // batch_size if drop else math.ceil(rows / batch_size), columns=columns,
        training=training, soft_targets=soft, aug=resolved_aug, samples=scan.samples, _bad_files=log)
    return dataset, info
