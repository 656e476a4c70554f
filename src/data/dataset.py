"""``create_dataset``: ImageNet-layout folder -> batched ``mindspore.dataset`` pipeline.

Pipeline: ``GeneratorDataset`` over a random-access Python source (PIL decode) -> ``map`` with
``mindspore.dataset.vision`` ops -> ``batch`` (-> a batch-level augmentation ``map`` when training).

The source runs in threads (``python_multiprocessing=False``) so that the unreadable files it records are
visible to the caller through ``DatasetInfo.bad_files()``; PIL releases the GIL while decoding and the
resize/normalise ops run in C++, so threads do not serialise the heavy work.
"""
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mindspore.dataset as ds
import numpy as np
from PIL import Image

from .folder import FolderScan, check_num_classes, load_rgb, scan_image_folder
from .interpolation import INTERPOLATIONS
from .transforms import BatchAugment, TrainTransform, check_aug, eval_transforms, normalize_transforms

__all__ = ["DatasetInfo", "create_dataset", "shard_order", "EVAL_COLUMNS", "TRAIN_COLUMNS"]

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
    """Position ``k`` of this shard's epoch -> ``(augmented image uint8 [H, W, 3], label int32)``.

    The image is ``samples[order[k]]``, augmented with a generator seeded by ``(seed, shard_id, k)``: a
    position gives the same image whatever the number of workers (exact resume), and the copies of an image
    that repeated augmentation places at other positions or on other shards are augmented independently.
    An unreadable file raises with its path.
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], order: np.ndarray, transform: TrainTransform,
                 seed: int, shard_id: int):
        self.samples = samples
        self.order = order
        self.transform = transform
        self.seed = seed
        self.shard_id = shard_id

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.int32]:
        path, label = self.samples[self.order[k]]
        try:
            image = Image.fromarray(load_rgb(path))
        except Exception as exc:  # pylint: disable=broad-except
            raise ValueError(f"{path}: unreadable training image ({_describe(exc)})") from exc
        rng = np.random.default_rng([self.seed, self.shard_id, int(k)])
        return self.transform(image, rng), np.int32(label)


def shard_order(n: int, seed: int, num_shards: int = 1, shard_id: int = 0, repeats: int = 1,
                shuffle: bool = True) -> np.ndarray:
    """The sample indices one shard reads in one training epoch, in order.

    A permutation of ``range(n)`` seeded by ``seed`` (the same on every shard; the caller derives the seed
    from the run's seed and the epoch), each index repeated ``repeats`` times in a row, then every
    ``num_shards``-th index from ``shard_id``: with repeated augmentation (DeiT's RASampler) the copies of an
    image go to different shards, or, on one device, follow each other. Every shard is cut to
    ``n // num_shards`` indices, so an epoch stays one pass long whatever ``repeats`` is (DeiT also rounds
    that count down to a multiple of 256, which is not reproduced).
    """
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    if repeats > 1:
        order = np.repeat(order, repeats)
    return order[shard_id::num_shards][:n // num_shards]


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


def _train_order(scan: FolderScan, batch_size: int, num_shards: int, shard_id: int, seed: int, shuffle: bool,
                 drop: bool, repeats: int) -> np.ndarray:
    """This shard's epoch order (:func:`shard_order`), after checking the split can fill it."""
    n = len(scan.samples)
    per_shard = n // num_shards
    if per_shard < (batch_size if drop else 1):
        raise ValueError(f"{scan.root}: {n} images give {per_shard} per shard ({num_shards} shards), "
                         f"too few for one batch of {batch_size}")
    if n / repeats < batch_size * num_shards:
        raise ValueError(f"{scan.root}: repeated augmentation {repeats} leaves {n / repeats:.0f} distinct images "
                         f"per epoch ({n} / {repeats}), fewer than one global batch of {batch_size * num_shards}")
    return shard_order(n, seed, num_shards, shard_id, repeats, shuffle)


def _eval_length(scan: FolderScan, shard_images: int, batch_size: int, num_shards: int, pad: bool,
                 drop: bool) -> int:
    """Rows this eval shard yields: with ``pad`` every shard gets the batch count of the largest one, so
    data-parallel ranks stay in step."""
    n = len(scan.samples)
    if pad:
        length = math.ceil(math.ceil(n / num_shards) / batch_size) * batch_size
    elif not shard_images:
        raise ValueError(f"{scan.root}: {n} images are fewer than num_shards={num_shards}; use pad_last=True")
    else:
        length = shard_images
    if drop and length < batch_size:
        raise ValueError(f"{scan.root}: this shard has {length} images, too few for one batch of "
                         f"{batch_size} with drop_remainder=True")
    return length


@dataclass(frozen=True)
class _Pipe:
    """The checked arguments of one ``create_dataset`` call that the pipeline builders read."""
    img_size: int
    batch_size: int
    num_workers: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_shards: int
    shard_id: int
    seed: int
    shuffle: bool
    pad: bool
    drop: bool
    strict: bool


def _check_args(split: str, img_size: int, batch_size: int, num_workers: int, num_shards: int, shard_id: int,
                seed: int, crop_pct: float, interpolation: str, repeated_aug: int) -> None:
    for name, value, lo in (("img_size", img_size, 1), ("batch_size", batch_size, 1), ("num_workers", num_workers, 1),
                            ("num_shards", num_shards, 1), ("seed", seed, 0), ("repeated_aug", repeated_aug, 1)):
        _check_int(name, value, lo)
    if not isinstance(shard_id, int) or isinstance(shard_id, bool) or not 0 <= shard_id < num_shards:
        raise ValueError(f"create_dataset: shard_id must be an int in [0, {num_shards}), got {shard_id!r}")
    if not isinstance(crop_pct, (int, float)) or isinstance(crop_pct, bool) or not 0 < crop_pct <= 1:
        raise ValueError(f"create_dataset: crop_pct must be a number in (0, 1], got {crop_pct!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"create_dataset: interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                         f"got {interpolation!r}")
    if not isinstance(split, str) or not split:
        raise ValueError(f"create_dataset: split must be a folder name such as 'val', got {split!r}")


def _train_pipeline(scan: FolderScan, pipe: _Pipe, aug: Mapping[str, Any], repeats: int,
                    num_classes: int) -> tuple[ds.Dataset, int, bool]:
    """The training pipeline; returns it, this shard's images per epoch and whether targets are soft."""
    order = _train_order(scan, pipe.batch_size, pipe.num_shards, pipe.shard_id, pipe.seed, pipe.shuffle, pipe.drop,
                         repeats)
    transform = TrainTransform(pipe.img_size, pipe.interpolation, aug, pipe.mean)
    source = _TrainSource(scan.samples, order, transform, pipe.seed, pipe.shard_id)
    # Positions in order: the source already holds the epoch's (shuffled, sharded) order.
    dataset = ds.GeneratorDataset(source, list(TRAIN_COLUMNS), shuffle=False, num_parallel_workers=pipe.num_workers,
                                  python_multiprocessing=False)
    dataset = dataset.map(normalize_transforms(pipe.mean, pipe.std), input_columns=["image"],
                          num_parallel_workers=pipe.num_workers)
    dataset = dataset.batch(pipe.batch_size, drop_remainder=pipe.drop)
    batch_aug = BatchAugment(num_classes, aug, seed=[pipe.seed, pipe.shard_id])
    if batch_aug.soft_targets or batch_aug.erase_prob > 0:
        # One worker: the batches then consume the seeded generator in a fixed order.
        dataset = dataset.map(batch_aug, input_columns=list(TRAIN_COLUMNS), num_parallel_workers=1)
    return dataset, len(order), batch_aug.soft_targets


def _eval_pipeline(scan: FolderScan, pipe: _Pipe, log: _BadFileLog) -> tuple[ds.Dataset, int, int]:
    """The eval pipeline; returns it, this shard's images and its rows (padding included)."""
    indices = list(range(pipe.shard_id, len(scan.samples), pipe.num_shards))
    if pipe.shuffle:  # e.g. a random subset from the first batches; padding rows stay last
        indices = [indices[i] for i in np.random.default_rng(pipe.seed).permutation(len(indices))]
    length = _eval_length(scan, len(indices), pipe.batch_size, pipe.num_shards, pipe.pad, pipe.drop)
    source = _EvalSource(scan.samples, indices, length, pipe.img_size, pipe.strict, log)
    dataset = ds.GeneratorDataset(source, list(EVAL_COLUMNS), shuffle=False, num_parallel_workers=pipe.num_workers,
                                  python_multiprocessing=False)
    dataset = dataset.map(eval_transforms(pipe.img_size, pipe.crop_pct, pipe.interpolation, pipe.mean, pipe.std),
                          input_columns=["image"], num_parallel_workers=pipe.num_workers)
    return dataset.batch(pipe.batch_size, drop_remainder=pipe.drop), len(indices), length


def create_dataset(root: str | os.PathLike, split: str, img_size: int, batch_size: int, *, crop_pct: float,
                   interpolation: str, mean: Sequence[float], std: Sequence[float], training: bool = False,
                   num_workers: int = 1, num_shards: int = 1, shard_id: int = 0, shuffle: bool | None = None,
                   seed: int = 0, strict: bool | None = None, pad_last: bool | None = None,
                   drop_remainder: bool | None = None, aug: Mapping[str, Any] | None = None,
                   repeated_aug: int = 1, num_classes: int | None = None) -> tuple[ds.Dataset, DatasetInfo]:
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
        interpolation: one of :data:`src.data.interpolation.INTERPOLATIONS`.
        mean, std: per-channel normalisation statistics on the 0..1 scale.
        num_workers: parallel workers for decoding and for the per-image ops.
        num_shards, shard_id: data-parallel sharding. Eval shards take every ``num_shards``-th image
            (disjoint, together every image once); training shards take interleaved slices of the epoch's
            global permutation, ``num_images // num_shards`` positions each (:func:`shard_order`).
        shuffle: default True for training, False for eval. The order is a permutation seeded by ``seed``.
            A training pipeline is ONE epoch: iterating it again repeats that epoch exactly, so build one
            pipeline per epoch with a seed derived from (run seed, epoch), as ``src.train`` does. Per-image
            augmentation draws from a generator seeded by ``(seed, shard_id, position)``, the batch-level
            augmentation from one seeded by ``(seed, shard_id)``: results depend on neither the number of
            workers nor timing.
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
        aug: training only (required): the augmentation settings, every key of a config's ``aug`` section
            (``config/README.md``; :func:`src.data.transforms.check_aug`); eval raises if given.
        repeated_aug: training only: DeiT's repeated augmentation; each image appears this many times per
            epoch (on different shards, or one after another on one shard), the epoch length unchanged. The
            distinct images of an epoch (``num_images / repeated_aug``) must fill one global batch.
        num_classes: the model's class count; a different number of class folders is an error. Also the
            width of the soft targets (default: the number of class folders).

    Returns:
        ``(dataset, info)``: the batched ``mindspore.dataset`` pipeline and a :class:`DatasetInfo`.
    """
    _check_args(split, img_size, batch_size, num_workers, num_shards, shard_id, seed, crop_pct, interpolation,
                repeated_aug)
    for given, name in ((aug is not None, "aug"), (repeated_aug != 1, "repeated_aug")):
        if given and not training:
            raise ValueError(f"create_dataset: {name} is only used with training=True")
    if training and aug is None:
        raise ValueError("create_dataset: training needs aug, the augmentation settings (a config's aug section)")
    pad, drop, strict = _resolve_batching(training, pad_last, drop_remainder, strict)
    pipe = _Pipe(img_size, batch_size, num_workers, float(crop_pct), interpolation, _check_stats("mean", mean, False),
                 _check_stats("std", std, True), num_shards, shard_id, seed,
                 training if shuffle is None else bool(shuffle), pad, drop, strict)
    scan: FolderScan = scan_image_folder(Path(root).expanduser() / split)
    if num_classes is not None:
        check_num_classes(scan.classes, num_classes, scan.root)
    num_classes = len(scan.classes)
    log = _BadFileLog()
    if training:
        aug = check_aug(aug)
        dataset, shard_images, soft = _train_pipeline(scan, pipe, aug, repeated_aug, num_classes)
        columns, rows = TRAIN_COLUMNS, shard_images
    else:
        (dataset, shard_images, rows), columns, soft = _eval_pipeline(scan, pipe, log), EVAL_COLUMNS, False
    info = DatasetInfo(
        root=scan.root, split=split, classes=scan.classes, num_classes=num_classes, num_images=len(scan.samples),
        num_shard_images=shard_images, num_dropped=shard_images % batch_size if drop else 0,
        num_ignored=len(scan.ignored), ignored_files=scan.ignored, batch_size=batch_size,
        num_batches=rows // batch_size if drop else math.ceil(rows / batch_size), columns=columns,
        training=training, soft_targets=soft, aug=dict(aug) if training else None, samples=scan.samples,
        _bad_files=log)
    return dataset, info
