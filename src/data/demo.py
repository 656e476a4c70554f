"""Built-in demo dataset: small, deterministic, generated on first use (numpy + PIL, no download).

Ten classes of shapes and textures -- circle, ring, square, frame, triangle, cross, star, stripes, checker,
dots -- drawn at a random position, size, rotation and colour on cluttered backgrounds, written as PNGs in
ImageNet layout: ``root/train/<class>/*.png`` and ``root/val/<class>/*.png``.

The backgrounds carry both redundancies PPT exploits: most patches show no object (uninformative, the
pruning case), and half the backgrounds are a small tile repeated over the image (near-duplicate
patches, the pooling case); the others are a noisy gradient. Backgrounds are low-saturation mid-tones and
objects are pushed far from them in colour, so the object is always visible. Soft distractor blobs, pixel noise,
low-contrast blocky tiles that resemble the checker texture, and class pairs that differ only inside the
outline (circle/ring, square/frame, and solid vs textured fills) keep it from being trivial.

Reuse: a finished set holds ``DEMO_DATASET.json`` (generator version and parameters), written last into a
temporary sibling folder that is then renamed into place, so a half-written folder is never taken for a
finished one. An existing folder whose marker names other parameters, or that has no marker but is not
empty, is an error rather than being regenerated: the folder may be user data, so it is never deleted.
"""
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["DEMO_CLASSES", "DEMO_VERSION", "DEMO_ENV_VAR", "MARKER_NAME", "default_demo_root",
           "ensure_demo_dataset", "resolve_data_root", "render_demo_image"]

DEMO_CLASSES = ("circle", "ring", "square", "frame", "triangle", "cross", "star", "stripes", "checker", "dots")
DEMO_VERSION = 2  # bump whenever the images change: the default root and the marker follow it
DEMO_ENV_VAR = "PPT_DEMO_DATA"
MARKER_NAME = "DEMO_DATASET.json"
_SPLITS = ("train", "val")
_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down, for anti-aliased edges


def default_demo_root() -> Path:
    """``$PPT_DEMO_DATA`` if set, else ``~/.cache/ppt_mindspore/demo_v<DEMO_VERSION>``."""
    env = os.environ.get(DEMO_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ppt_mindspore" / f"demo_v{DEMO_VERSION}"


def _colour(rng: np.random.Generator, away_from: np.ndarray, min_dist: float = 90.0) -> np.ndarray:
    """A random RGB colour, at mean absolute channel distance >= ``min_dist`` from ``away_from``."""
    for _ in range(200):
        c = rng.uniform(0, 255, 3)
        if np.abs(c - away_from).mean() >= min_dist:
            return c
    # Practically unreachable; the far corner of the RGB cube is >= 127.5 away on every channel.
    return np.where(away_from < 128, 255.0, 0.0)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # Low-saturation mid-tone backgrounds, so objects (pushed away from them) always stand out by contrast.
    base = rng.uniform(70, 185) + rng.uniform(-20, 20, 3)
    other = np.clip(base + rng.uniform(15, 35, 3) * rng.choice([-1, 1], 3), 0, 255)
    if rng.random() < 0.5:
        # A small blocky tile repeated over the image at a random offset: near-duplicate patches.
        period = int(rng.choice([4, 6, 8, 12, 16]))
        cells = int(rng.integers(2, 5))
        coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
        tile = np.asarray(Image.fromarray(coarse).resize((period, period), Image.NEAREST)) / 255.0
        reps = size // period + 2
        oy, ox = rng.integers(0, period, 2)
        mix = np.tile(tile, (reps, reps))[oy:oy + size, ox:ox + size]
    else:
        # A gradient plus low-frequency noise.
        angle = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        ramp = (xx * math.cos(angle) + yy * math.sin(angle) + 1.0) / 2.0
        coarse = (rng.random((6, 6)) * 255).astype(np.uint8)
        noise = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BILINEAR)) / 255.0
        mix = np.clip(0.7 * ramp + 0.6 * (noise - 0.5), 0, 1)
    img = base * (1 - mix[..., None]) + other * mix[..., None]
    # Distractor blobs: soft, shapeless, in any colour.
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(int(rng.integers(1, 5))):
        cy, cx = rng.uniform(0, size, 2)
        sy, sx = rng.uniform(1.5, 5.0, 2)
        alpha = rng.uniform(0.3, 0.7) * np.exp(-0.5 * (((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2))
        img = img * (1 - alpha[..., None]) + rng.uniform(0, 255, 3) * alpha[..., None]
    return img


def _polygon(cx: float, cy: float, radii: list[float], angle: float) -> list[tuple[float, float]]:
    """Vertices at evenly spaced angles starting at ``angle``, with the given radii in turn."""
    n = len(radii)
    return [(cx + r * math.cos(angle + 2 * math.pi * k / n), cy + r * math.sin(angle + 2 * math.pi * k / n))
            for k, r in enumerate(radii)]


def _shape_mask(rng: np.random.Generator, kind: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    """Anti-aliased alpha mask in [0, 1] of one shape (``kind`` a shape class or ``disk``/``square``)."""
    s = _SUPERSAMPLE
    canvas = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = cx * s, cy * s, r * s
    angle = rng.uniform(0, 2 * math.pi)
    if kind in ("circle", "ring", "disk"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        if kind == "ring":
            inner = r * rng.uniform(0.5, 0.7)
            draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)
    elif kind in ("square", "frame"):
        draw.polygon(_polygon(cx, cy, [r] * 4, angle), fill=255)
        if kind == "frame":
            draw.polygon(_polygon(cx, cy, [r * rng.uniform(0.5, 0.7)] * 4, angle), fill=0)
    elif kind == "triangle":
        draw.polygon(_polygon(cx, cy, [r * 1.1] * 3, angle), fill=255)
    elif kind == "cross":
        half = r * rng.uniform(0.18, 0.28)  # half the arm width
        for arm in (angle, angle + math.pi / 2):
            c, si = math.cos(arm), math.sin(arm)
            draw.polygon([(cx + dx * c - dy * si, cy + dx * si + dy * c)
                          for dx, dy in ((-r, -half), (r, -half), (r, half), (-r, half))], fill=255)
    elif kind == "star":
        inner = rng.uniform(0.38, 0.5)
        draw.polygon(_polygon(cx, cy, [r * 1.1, r * 1.1 * inner] * 5, angle), fill=255)
    else:
        raise ValueError(f"unknown demo shape {kind!r}")
    small = canvas.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


def _texture(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """A rotated two-level pattern in [0, 1]: stripes, checker or dots."""
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    if kind == "stripes":
        period = rng.uniform(4.0, 7.0)
        return np.clip(0.5 + 1.5 * np.sin(2 * math.pi * u / period), 0, 1)
    if kind == "checker":
        cell = rng.uniform(3.0, 5.5)
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float64)
    spacing = rng.uniform(5.0, 7.5)
    radius = rng.uniform(1.2, 1.9)
    du = (u / spacing - np.round(u / spacing)) * spacing
    dv = (v / spacing - np.round(v / spacing)) * spacing
    return np.clip(radius - np.hypot(du, dv) + 0.5, 0, 1)


def render_demo_image(class_index: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """Draw one image of class ``DEMO_CLASSES[class_index]`` as ``uint8 [size, size, 3]``."""
    kind = DEMO_CLASSES[class_index]
    img = _background(rng, size)
    r = rng.uniform(0.22, 0.34) * size
    # Keep the whole object inside the eval centre crop (crop_pct 0.875 trims ~6% per side).
    margin = 0.07 * size + r
    cx, cy = rng.uniform(margin, size - margin, 2)
    local_bg = img[int(cy), int(cx)]
    colour = _colour(rng, away_from=local_bg)
    if kind in ("stripes", "checker", "dots"):
        region = "disk" if rng.random() < 0.5 else "square"
        alpha = _shape_mask(rng, region, size, cx, cy, r)
        pattern = _texture(rng, kind, size)[..., None]
        fill = colour * (1 - pattern) + _colour(rng, away_from=colour) * pattern
    else:
        alpha = _shape_mask(rng, kind, size, cx, cy, r)
        # Gentle shading so solid shapes are not perfectly flat.
        yy, xx = np.mgrid[0:size, 0:size] / size
        shade = 1.0 + rng.uniform(-0.15, 0.15) * (xx - 0.5) + rng.uniform(-0.15, 0.15) * (yy - 0.5)
        fill = colour * shade[..., None]
    img = img * (1 - alpha[..., None]) + fill * alpha[..., None]
    img = img + rng.normal(0.0, rng.uniform(3.0, 10.0), img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def _check_params(num_classes: Any, train_per_class: Any, val_per_class: Any, image_size: Any,
                  seed: Any) -> dict[str, int]:
    params = {"num_classes": num_classes, "train_per_class": train_per_class, "val_per_class": val_per_class,
              "image_size": image_size, "seed": seed}
    bounds = {"num_classes": (2, len(DEMO_CLASSES)), "train_per_class": (1, None), "val_per_class": (1, None),
              "image_size": (16, None), "seed": (0, None)}
    for key, value in params.items():
        lo, hi = bounds[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
            expected = f"an int in [{lo}, {hi}]" if hi is not None else f"an int >= {lo}"
            raise ValueError(f"ensure_demo_dataset: {key} must be {expected}, got {value!r}")
    return params


def _marker(params: dict[str, int]) -> dict[str, Any]:
    return {"generator": "src.data.demo", "version": DEMO_VERSION,
            "classes": list(DEMO_CLASSES[:params["num_classes"]]), "params": params}


def _is_finished(root: Path, params: dict[str, int]) -> bool:
    """True if ``root`` is a finished set made with ``params``; False if absent or an empty folder."""
    if not root.exists():
        return False
    if not root.is_dir():
        raise NotADirectoryError(f"demo dataset root {root} exists and is not a folder")
    marker = root / MARKER_NAME
    if not marker.is_file():
        if any(root.iterdir()):
            raise ValueError(f"{root}: exists but holds no {MARKER_NAME}, so it is not a finished demo "
                             f"dataset; delete it or choose another root")
        return False
    try:
        found = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{marker}: unreadable demo dataset marker ({exc})") from exc
    wanted = _marker(params)
    if found != wanted:
        raise ValueError(f"{marker}: demo dataset was generated as {json.dumps(found, sort_keys=True)} but "
                         f"{json.dumps(wanted, sort_keys=True)} is requested; delete {root} or choose "
                         f"another root")
    return True


def _generate(out: Path, params: dict[str, int]) -> None:
    for split_code, (split, per_class) in enumerate(
            zip(_SPLITS, (params["train_per_class"], params["val_per_class"]))):
        for label in range(params["num_classes"]):
            folder = out / split / DEMO_CLASSES[label]
            folder.mkdir(parents=True)
            for i in range(per_class):
                # One generator per image: every image is independent of generation order and counts.
                rng = np.random.default_rng([params["seed"], split_code, label, i])
                img = render_demo_image(label, rng, params["image_size"])
                Image.fromarray(img).save(folder / f"{DEMO_CLASSES[label]}_{i:04d}.png", format="PNG")
    (out / MARKER_NAME).write_text(json.dumps(_marker(params), indent=2, sort_keys=True) + "\n",
                                   encoding="utf-8")


def ensure_demo_dataset(root: str | os.PathLike | None = None, *, num_classes: int = 10,
                        train_per_class: int = 160, val_per_class: int = 40, image_size: int = 72,
                        seed: int = 0) -> Path:
    """Return the demo dataset root, generating it first if it does not exist yet.

    Args:
        root: where the set lives; default :func:`default_demo_root` (``$PPT_DEMO_DATA`` or
            ``~/.cache/ppt_mindspore/demo_v<DEMO_VERSION>``). An absent or empty folder is generated; a
            finished set with the same version and parameters is reused; anything else is an error (see the
            module doc).
        num_classes: the first ``num_classes`` of :data:`DEMO_CLASSES` (2..10).
        train_per_class, val_per_class: images per class in ``train/`` and ``val/``.
        image_size: image height and width in pixels (the demo model crops 64 from 72).
        seed: base seed; every image has its own generator seeded by ``(seed, split, class, index)``.

    Returns:
        The dataset root (holding ``train/`` and ``val/``).
    """
    params = _check_params(num_classes, train_per_class, val_per_class, image_size, seed)
    root = Path(root).expanduser() if root is not None else default_demo_root()
    if _is_finished(root, params):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _generate(tmp, params)
        try:
            os.replace(tmp, root)  # atomic; also replaces an empty folder
        except OSError:
            # Another process finished first; its copy is checked below.
            if not root.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    if not _is_finished(root, params):
        raise ValueError(f"{root}: demo dataset generation did not produce {MARKER_NAME}")
    return root


def resolve_data_root(path: str | os.PathLike) -> Path:
    """``"demo"`` -> :func:`ensure_demo_dataset` (default root); anything else -> that folder, which must exist.

    Use ``./demo`` for a real folder named ``demo``.
    """
    if str(path) == "demo":
        return ensure_demo_dataset()
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root} (expected a folder with train/ and val/ "
                                f"class sub-folders, or the word 'demo')")
    return root
