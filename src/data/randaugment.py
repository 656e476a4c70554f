"""timm's RandAugment ``rand-m9-mstd0.5-inc1`` (DeiT's training recipe) as per-image PIL ops.

Why this exists: MindSpore's ``vision.RandAugment`` cannot express DeiT's policy (no magnitude noise,
no per-op probability, no Invert/SolarizeAdd). This module follows timm 0.4.x, which the official
DeiT/PPT code trains with, but draws every random number from a ``numpy.random.Generator`` passed per
call, so a generator seeded per image (seed, epoch, rank, position) reproduces the image exactly.

Semantics of ``rand-m9-mstd0.5-inc1`` with DeiT's hyper-parameters:

* ``num_ops`` (2) ops per image, picked uniformly *with replacement* from the 15 "increasing" ops in
  :data:`OPS` (timm's ``_RAND_INCREASING_TRANSFORMS``, same order).
* each picked op runs with probability ``prob`` (0.5); otherwise it is skipped.
* a running op draws its magnitude from N(``magnitude``, ``magnitude_std``) = N(9, 0.5) and clips it to
  [0, 10] (no draw when the std is 0).
* level -> argument, with m the clipped magnitude and "+/-" a fair random sign (negative when the
  generator's next ``random()`` is > 0.5):

  ====================  ==========================================================================
  op                    argument
  ====================  ==========================================================================
  AutoContrast          none (per-channel min..max stretched to 0..255, PIL ``autocontrast``)
  Equalize              none (per-channel histogram equalisation, PIL ``equalize``)
  Invert                none (255 - x)
  Rotate                +/- m/10 * 30 degrees (PIL ``rotate``, counter-clockwise for +)
  PosterizeIncreasing   keep 4 - int(m/10 * 4) high bits (0 bits -> black)
  SolarizeIncreasing    invert pixels >= 256 - int(m/10 * 256)
  SolarizeAdd           add int(m/10 * 110) to pixels < 128, clipped at 255
  ColorIncreasing       PIL Color enhance, factor 1 +/- m/10 * 0.9
  ContrastIncreasing    PIL Contrast enhance, factor 1 +/- m/10 * 0.9
  BrightnessIncreasing  PIL Brightness enhance, factor 1 +/- m/10 * 0.9
  SharpnessIncreasing   PIL Sharpness enhance, factor 1 +/- m/10 * 0.9
  ShearX                affine (1, +/-m/10*0.3, 0, 0, 1, 0)
  ShearY                affine (1, 0, 0, +/-m/10*0.3, 1, 0)
  TranslateXRel         affine x offset +/- m/10 * 0.45 * width pixels (not rounded)
  TranslateYRel         affine y offset +/- m/10 * 0.45 * height pixels (not rounded)
  ====================  ==========================================================================

* geometric ops fill uncovered pixels with ``fill``: DeiT passes the ImageNet mean, which timm turns into
  ``round(255 * mean)`` = (124, 116, 104) (timm's own default, unused by DeiT, is (128, 128, 128)); they
  resample with the training interpolation, bicubic for DeiT. timm only picks bilinear or bicubic at
  random per op when the interpolation is ``'random'``, which DeiT does not use, so it is not offered.

Sources checked (facts only, no code copied): ``timm/data/auto_augment.py`` and
``timm/data/transforms_factory.py`` in the fork ``datduong/pytorch-image-models`` at commit 9332b84 (the
0.4.x-era file: ``_MAX_LEVEL``, no ``mmax``), and ``huggingface/pytorch-image-models`` at commit 066e490
(later file). Differences between them, none of which changes this policy: the later file renames
``_MAX_LEVEL`` to ``_LEVEL_DENOM``; adds ``mmax`` (a magnitude clip other than 10) and ``mstd`` > 100 or
inf (uniform magnitude in [0, m]); clamps enhance factors at >= 0.1 (already true for m <= 10); converts
interpolation names inside each op. We follow 0.4.x: clip to [0, 10], Gaussian noise only (an infinite
std is rejected).

Deliberate differences from timm: timm mixes Python's ``random`` (op probability, magnitude, signs) and
numpy's global state (op choice); here one generator draws, in this order, the op indices, then per op
the probability draw and (if applied, std > 0) the magnitude, then while applying each op its sign. The
distributions are the same, the streams are not. Absolute translations (``translate_const``) and the
weighted op choice (``w0``) are not part of this policy and are left out.
"""
import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from .interpolation import INTERPOLATIONS, PIL_FILTERS

__all__ = ["DEIT_FILL", "MAX_MAGNITUDE", "OPS", "OP_NAMES", "RandAugment"]

MAX_MAGNITUDE = 10.0  # timm's 0..10 magnitude scale
DEIT_FILL = (124, 116, 104)  # round(255 * ImageNet mean)

Fill = tuple[int, int, int]
OpFn = Callable[[Image.Image, float, np.random.Generator, Fill, int], Image.Image]


def _frac(magnitude: float) -> float:
    """Magnitude as a fraction of the scale; every level mapping is linear in it."""
    return magnitude / MAX_MAGNITUDE


def _random_sign(value: float, rng: np.random.Generator) -> float:
    """Negate with probability 1/2 (negative when the draw is > 0.5, as timm's ``_randomly_negate``)."""
    return -value if rng.random() > 0.5 else value


def _enhance_factor(magnitude: float, rng: np.random.Generator) -> float:
    """'Increasing' enhance factor: the farther from 1 (either way), the stronger the op."""
    return 1.0 + _random_sign(_frac(magnitude) * 0.9, rng)


def _affine(img: Image.Image, coeffs: tuple[float, ...], fill: Fill, resample: int) -> Image.Image:
    """PIL affine: output (x, y) samples input (a x + b y + c, d x + e y + f)."""
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample=resample, fillcolor=fill)


def _lut3(img: Image.Image, lut: list[int]) -> Image.Image:
    """Apply one 256-entry table to all three channels."""
    return img.point(lut * 3)


def _auto_contrast(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    return ImageOps.autocontrast(img)


def _equalize(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    return ImageOps.equalize(img)


def _invert(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    return _lut3(img, [255 - i for i in range(256)])


def _rotate(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    degrees = _random_sign(_frac(m) * 30.0, rng)
    return img.rotate(degrees, resample=resample, fillcolor=fill)


def _posterize(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    bits = 4 - int(_frac(m) * 4)
    mask = (0xFF << (8 - bits)) & 0xFF
    return _lut3(img, [i & mask for i in range(256)])


def _solarize(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    threshold = 256 - int(_frac(m) * 256)
    return _lut3(img, [255 - i if i >= threshold else i for i in range(256)])


def _solarize_add(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    add = int(_frac(m) * 110)
    return _lut3(img, [min(255, i + add) if i < 128 else i for i in range(256)])


def _color(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    return ImageEnhance.Color(img).enhance(_enhance_factor(m, rng))


def _contrast(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(_enhance_factor(m, rng))


def _brightness(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(_enhance_factor(m, rng))


def _sharpness(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    return ImageEnhance.Sharpness(img).enhance(_enhance_factor(m, rng))


def _shear_x(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    return _affine(img, (1, _random_sign(_frac(m) * 0.3, rng), 0, 0, 1, 0), fill, resample)


def _shear_y(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    return _affine(img, (1, 0, 0, _random_sign(_frac(m) * 0.3, rng), 1, 0), fill, resample)


def _translate_x(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    pixels = _random_sign(_frac(m) * 0.45, rng) * img.size[0]
    return _affine(img, (1, 0, pixels, 0, 1, 0), fill, resample)


def _translate_y(img: Image.Image, m: float, rng: np.random.Generator, fill: Fill, resample: int) -> Image.Image:
    pixels = _random_sign(_frac(m) * 0.45, rng) * img.size[1]
    return _affine(img, (1, 0, 0, 0, 1, pixels), fill, resample)


# Op name -> fn(img, magnitude in [0, 10], rng, fill, resample); timm's "increasing" set and order.
OPS: dict[str, OpFn] = {
    "AutoContrast": _auto_contrast,
    "Equalize": _equalize,
    "Invert": _invert,
    "Rotate": _rotate,
    "PosterizeIncreasing": _posterize,
    "SolarizeIncreasing": _solarize,
    "SolarizeAdd": _solarize_add,
    "ColorIncreasing": _color,
    "ContrastIncreasing": _contrast,
    "BrightnessIncreasing": _brightness,
    "SharpnessIncreasing": _sharpness,
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateXRel": _translate_x,
    "TranslateYRel": _translate_y,
}
OP_NAMES: tuple[str, ...] = tuple(OPS)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _validate(num_ops: object, magnitude: object, magnitude_std: object, prob: object, fill: object,
              interpolation: object) -> None:
    """One-line ValueError naming the first bad argument, so config mistakes fail at construction."""
    def bad(name: str, expected: str, got: object) -> ValueError:
        return ValueError(f"randaugment: {name} must be {expected}, got {got!r}")

    if not (_is_int(num_ops) and num_ops >= 0):
        raise bad("num_ops", "an integer >= 0", num_ops)
    if not (_is_number(magnitude) and 0 <= magnitude <= MAX_MAGNITUDE):
        raise bad("magnitude", "in [0, 10]", magnitude)
    if not (_is_number(magnitude_std) and math.isfinite(magnitude_std) and magnitude_std >= 0):
        raise bad("magnitude_std", "a finite number >= 0", magnitude_std)
    if not (_is_number(prob) and 0 <= prob <= 1):
        raise bad("prob", "in [0, 1]", prob)
    if not (isinstance(fill, (tuple, list)) and len(fill) == 3
            and all(_is_int(c) and 0 <= c <= 255 for c in fill)):
        raise bad("fill", "3 integers in [0, 255]", fill)
    if interpolation not in PIL_FILTERS:
        raise bad("interpolation", " or ".join(map(repr, INTERPOLATIONS)), interpolation)


class RandAugment:
    """Per-image RandAugment; ``__call__(img, rng)`` is a pure function of the image and generator state."""

    def __init__(self, num_ops: int = 2, magnitude: float = 9, magnitude_std: float = 0.5, prob: float = 0.5,
                 fill: tuple[int, int, int] = DEIT_FILL, interpolation: str = "bicubic") -> None:
        _validate(num_ops, magnitude, magnitude_std, prob, fill, interpolation)
        self.num_ops = int(num_ops)
        self.magnitude = float(magnitude)
        self.magnitude_std = float(magnitude_std)
        self.prob = float(prob)
        self.fill: Fill = (int(fill[0]), int(fill[1]), int(fill[2]))
        self.interpolation = interpolation
        self.resample = PIL_FILTERS[interpolation]

    def sample(self, rng: np.random.Generator) -> list[tuple[str, float]]:
        """Draw which ops run and their magnitudes: (name, magnitude) for each op not skipped, in order.

        Separate from applying them so the op choice, skip rate and magnitude noise are testable.
        """
        _check_rng(rng)
        picks = rng.integers(0, len(OP_NAMES), size=self.num_ops)
        plan = []
        for index in picks:
            if rng.random() > self.prob:  # timm skips when its draw exceeds prob
                continue
            magnitude = self.magnitude
            if self.magnitude_std > 0:
                magnitude = float(rng.normal(self.magnitude, self.magnitude_std))
            plan.append((OP_NAMES[int(index)], min(MAX_MAGNITUDE, max(0.0, magnitude))))
        return plan

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Augment one RGB image; the output is RGB of the same size."""
        if not isinstance(img, Image.Image):
            raise TypeError(f"randaugment: img must be a PIL image, got {type(img).__name__}")
        if img.mode != "RGB":
            raise ValueError(f"randaugment: img must be an RGB image, got mode {img.mode!r}")
        for name, magnitude in self.sample(rng):
            img = OPS[name](img, magnitude, rng, self.fill, self.resample)
        return img

    def __repr__(self) -> str:
        return (f"RandAugment(num_ops={self.num_ops}, magnitude={self.magnitude}, "
                f"magnitude_std={self.magnitude_std}, prob={self.prob}, fill={self.fill}, "
                f"interpolation={self.interpolation!r})")


def _check_rng(rng: object) -> None:
    """Refuse anything but a Generator: global or Python randomness would break exact resume."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"randaugment: rng must be a numpy.random.Generator, got {type(rng).__name__}")
