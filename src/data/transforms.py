"""DeiT preprocessing and augmentation on ``mindspore.dataset``.

Evaluation (timm/DeiT eval transform): resize the shorter side to ``int(img_size / crop_pct)``, centre crop
``img_size``, normalise with mean/std, HWC -> CHW float32.

Training (DeiT recipe): RandomResizedCrop, horizontal flip, RandAugment, normalise, then -- on whole
batches, in :class:`BatchAugment` -- RandomErasing, Mixup/CutMix and label smoothing.

Training augmentation settings (the ``aug`` mapping of ``create_dataset``) are the keys of a config's
``aug`` section, with their meanings and defaults in ``config/README.md``: the schema states them once;
:func:`check_aug` only checks that every key the pipeline reads is there.

Targets: when Mixup, CutMix or label smoothing is active the label column is a float32
``[B, num_classes]`` soft-target matrix whose rows sum to 1; with all three disabled it stays int32 ``[B]``
(use a plain sparse cross-entropy then).

Per-image training augmentation runs in Python on PIL images (:class:`TrainTransform`) with one
``numpy.random.Generator`` per image, seeded by the pipeline from (seed, epoch, shard, position): results
do not depend on the number of workers, so a resumed run sees exactly the same images, and every device
(and every repeated copy of an image) draws its own crops. RandomResizedCrop follows timm's
``RandomResizedCropAndInterpolation`` (10 attempts, log-uniform aspect ratio, centre-crop fallback; crop,
then resize); RandAugment is timm's ``rand-m9-mstd0.5-inc1`` (:mod:`src.data.randaugment`), filling
uncovered pixels with the mean colour. Colour jitter is not offered: DeiT's recipe has it off whenever
RandAugment is on.
"""
import math
from collections.abc import Mapping, Sequence
from typing import Any

import mindspore.dataset.vision as vision
import numpy as np
from mindspore.dataset.vision import Inter
from PIL import Image, ImageOps

from .interpolation import PIL_FILTERS
from .randaugment import RandAugment

__all__ = ["check_aug", "eval_transforms", "normalize_transforms", "CenterCrop",
           "RandomResizedCrop", "TrainTransform", "BatchAugment"]



def check_aug(aug: Mapping[str, Any]) -> dict[str, Any]:
    """``aug`` as a dict, after checking it holds every key the training pipeline reads (its values are
    checked by the config schema)."""
    missing = [key for key in TrainTransform.KEYS + BatchAugment.KEYS if key not in aug]
    if missing:
        raise ValueError(f"aug: missing keys {', '.join(missing)} (a config's aug section has them all)")
    return dict(aug)


def _normalize_ops(mean: Sequence[float], std: Sequence[float]) -> list:
    # Normalize works on 0..255 pixel values, so the 0..1 statistics are scaled by 255.
    return [vision.Normalize([m * 255.0 for m in mean], [s * 255.0 for s in std]), vision.HWC2CHW()]


class CenterCrop:
    """Centre crop with torchvision's offsets ``round((size_in - size) / 2)``.

    ``vision.CenterCrop`` floors the offset, which shifts the crop by one pixel for odd margins compared
    with the timm/torchvision eval transform that published DeiT accuracies were measured with.
    """

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: Any) -> np.ndarray:
        arr = np.asarray(img)
        h, w = arr.shape[:2]
        if h < self.size or w < self.size:
            raise ValueError(f"CenterCrop: image {h}x{w} is smaller than the crop size {self.size}")
        top = int(round((h - self.size) / 2.0))
        left = int(round((w - self.size) / 2.0))
        return np.ascontiguousarray(arr[top:top + self.size, left:left + self.size])


def eval_transforms(img_size: int, crop_pct: float, interpolation: str,
                    mean: Sequence[float], std: Sequence[float]) -> list:
    """Per-image eval ops: ``uint8 [H, W, 3]`` -> normalised ``float32 [3, img_size, img_size]``."""
    scale_size = int(img_size / crop_pct)
    if interpolation == "bicubic":
        # PILCUBIC reproduces PIL's bicubic resize (the timm reference) in C++.
        resize = [vision.Resize(scale_size, Inter.PILCUBIC)]
    else:
        # On a PIL image Resize runs PIL's own (antialiased) bilinear; the C++ BILINEAR is OpenCV's,
        # which does not antialias when downscaling and differs from timm noticeably.
        resize = [vision.ToPIL(), vision.Resize(scale_size, Inter.BILINEAR)]
    return resize + [CenterCrop(img_size)] + _normalize_ops(mean, std)


def normalize_transforms(mean: Sequence[float], std: Sequence[float]) -> list:
    """Per-image ops after the training augmentation: ``uint8 [H, W, 3]`` -> normalised ``float32 [3, H, W]``."""
    return _normalize_ops(mean, std)


class RandomResizedCrop:
    """timm's ``RandomResizedCropAndInterpolation`` drawing from a given generator.

    Up to 10 attempts at an area fraction ``U(scale)`` and a log-uniform aspect ratio within ``ratio`` that
    fits the image; otherwise a centre crop with the ratio clamped into ``ratio``. The crop is cut out, then
    resized (resizing a box of the whole image would let pixels outside the crop into the filter).
    """

    def __init__(self, size: int, scale: Sequence[float], ratio: Sequence[float], interpolation: str):
        self.size = size
        self.scale = (float(scale[0]), float(scale[1]))
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.resample = PIL_FILTERS[interpolation]

    def box(self, width: int, height: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """``(left, top, w, h)`` of the crop in a ``width`` x ``height`` image."""
        area = width * height
        for _ in range(10):
            target = rng.uniform(*self.scale) * area
            aspect = math.exp(rng.uniform(*self.log_ratio))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if w <= width and h <= height:
                return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
        in_ratio = width / height
        w, h = width, height
        if in_ratio < self.ratio[0]:
            h = int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            w = int(round(height * self.ratio[1]))
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        left, top, w, h = self.box(img.width, img.height, rng)
        return img.crop((left, top, left + w, top + h)).resize((self.size, self.size), self.resample)


class TrainTransform:
    """Per-image training augmentation on a PIL image: RandomResizedCrop, horizontal flip, RandAugment.

    ``aug`` holds (at least) :attr:`KEYS`; ``mean`` (0..1 scale) gives RandAugment's fill colour, as timm
    derives it. Returns ``uint8 [img_size, img_size, 3]``; normalisation follows in the pipeline.
    """

    KEYS = ("scale", "ratio", "hflip", "randaug_magnitude", "randaug_num_ops", "randaug_mstd", "randaug_prob")

    def __init__(self, img_size: int, interpolation: str, aug: Mapping[str, Any], mean: Sequence[float]):
        self.crop = RandomResizedCrop(img_size, aug["scale"], aug["ratio"], interpolation)
        self.hflip = aug["hflip"]
        self.randaug = None
        if aug["randaug_magnitude"] > 0:
            fill = tuple(min(255, round(255 * m)) for m in mean)
            self.randaug = RandAugment(aug["randaug_num_ops"], aug["randaug_magnitude"], aug["randaug_mstd"],
                                       aug["randaug_prob"], fill=fill, interpolation=interpolation)

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> np.ndarray:
        img = self.crop(img, rng)
        if self.hflip > 0 and rng.random() < self.hflip:
            img = ImageOps.mirror(img)
        if self.randaug is not None:
            img = self.randaug(img, rng)
        return np.asarray(img, dtype=np.uint8)


class BatchAugment:
    """Batch-level RandomErasing, Mixup/CutMix and label smoothing on normalised ``[B, C, H, W]`` batches.

    Follows timm's definitions: erasing fills one box per chosen image (area 2%..1/3, log-uniform aspect
    ratio 0.3..3.3, up to 10 placement attempts) with per-pixel N(0, 1) noise; Mixup/CutMix pair image ``i``
    with image ``B-1-i`` using one ``lam ~ Beta(alpha, alpha)`` per batch; CutMix's ``lam`` is corrected to
    the actual box area; targets are ``lam * y_i + (1 - lam) * y_{B-1-i}`` of smoothed one-hot vectors
    (off value ``smoothing / num_classes``). All randomness comes from one seeded numpy generator, so a
    pipeline that runs this op in a single worker is reproducible. ``aug`` holds (at least) :attr:`KEYS`.
    """

    KEYS = ("erase_prob", "mixup_alpha", "cutmix_alpha", "mixup_prob", "mixup_switch_prob", "label_smoothing")

    def __init__(self, num_classes: int, aug: Mapping[str, Any], seed: int | Sequence[int]):
        self.num_classes = num_classes
        self.erase_prob = aug["erase_prob"]
        self.mixup_alpha = aug["mixup_alpha"]
        self.cutmix_alpha = aug["cutmix_alpha"]
        self.mixup_prob = aug["mixup_prob"]
        self.switch_prob = aug["mixup_switch_prob"]
        self.smoothing = aug["label_smoothing"]
        self.rng = np.random.default_rng(seed)

    @property
    def soft_targets(self) -> bool:
        """Whether labels become float32 ``[B, num_classes]`` (else they pass through unchanged)."""
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0 or self.smoothing > 0

    def _erase(self, img: np.ndarray) -> None:
        channels, height, width = img.shape
        area = height * width
        for _ in range(10):
            target = self.rng.uniform(0.02, 1.0 / 3.0) * area
            aspect = math.exp(self.rng.uniform(math.log(0.3), math.log(1.0 / 0.3)))
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if h < height and w < width:
                top = int(self.rng.integers(0, height - h + 1))
                left = int(self.rng.integers(0, width - w + 1))
                img[:, top:top + h, left:left + w] = self.rng.standard_normal((channels, h, w))
                return

    def _mix(self, images: np.ndarray) -> tuple[np.ndarray, float]:
        use_mixup, use_cutmix = self.mixup_alpha > 0, self.cutmix_alpha > 0
        if not (use_mixup or use_cutmix) or self.rng.random() >= self.mixup_prob:
            return images, 1.0
        if use_mixup and use_cutmix:
            use_cutmix = self.rng.random() < self.switch_prob
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(self.rng.beta(alpha, alpha))
        if not use_cutmix:
            return (images * lam + images[::-1] * (1.0 - lam)).astype(np.float32), lam
        height, width = images.shape[2:]
        cut = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * cut), int(width * cut)
        cy, cx = int(self.rng.integers(0, height)), int(self.rng.integers(0, width))
        y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
        x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
        # Copy first: the source is a reversed view of the array being written.
        images[:, :, y0:y1, x0:x1] = images[::-1, :, y0:y1, x0:x1].copy()
        return images, 1.0 - float((y1 - y0) * (x1 - x0)) / (height * width)

    def __call__(self, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = np.array(images, dtype=np.float32)  # a writable copy
        if self.erase_prob > 0:
            for img in images:
                if self.rng.random() < self.erase_prob:
                    self._erase(img)
        if not self.soft_targets:
            return images, labels
        images, lam = self._mix(images)
        off = self.smoothing / self.num_classes
        onehot = np.full((len(labels), self.num_classes), off, dtype=np.float32)
        onehot[np.arange(len(labels)), labels] = 1.0 - self.smoothing + off
        targets = lam * onehot + (1.0 - lam) * onehot[::-1]
        return images, targets.astype(np.float32)
