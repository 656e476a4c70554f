"""ImageNet-layout folder scanning and image loading.

Layout: ``root/<split>/<class>/<image>`` (images may sit in nested sub-folders of a class folder).
Classes are the class sub-folder names sorted as plain strings (torchvision's ``ImageFolder`` order), and
the label of an image is the index of its class in that order.
"""
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["IMAGE_EXTENSIONS", "FolderScan", "class_folders", "scan_image_folder", "check_num_classes", "load_rgb",
           "collect_images"]

# Matched case-insensitively against the file suffix.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
# Pillow modes whose convert("RGB") is right (8 bits per channel), and 16-bit grey, scaled by load_rgb.
_EIGHT_BIT_MODES = frozenset({"1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "HSV"})
_SIXTEEN_BIT_GREY = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_MODE_NAMES = {"I": " (32-bit integer pixels)", "F": " (32-bit float pixels)", "LAB": " (CIELAB)"}


@dataclass(frozen=True)
class FolderScan:
    """Result of scanning one split folder.

    Attributes:
        root: the split folder that was scanned (``root/<split>``).
        classes: class folder names, sorted; the label of a class is its index here.
        samples: ``(path, label)`` for every image file, sorted by class then path.
        ignored: files skipped because their extension is not an image extension (including files lying
            directly in the split folder, outside any class folder).
    """

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[Path, int], ...]
    ignored: tuple[Path, ...]


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def class_folders(split_dir: str | os.PathLike) -> tuple[str, ...]:
    """The classes of a split folder in label order: its sub-folder names sorted as plain strings (without
    looking inside them, so naming the classes of a large dataset is quick)."""
    return tuple(sorted(e.name for e in os.scandir(split_dir) if e.is_dir()))


def scan_image_folder(split_dir: str | os.PathLike) -> FolderScan:
    """Scan ``split_dir/<class>/...`` for image files.

    Args:
        split_dir: the split folder, e.g. ``/data/imagenet/val``.

    Returns:
        A :class:`FolderScan`.

    Raises:
        FileNotFoundError: ``split_dir`` does not exist or is not a folder.
        ValueError: no class sub-folders, no image files at all, or a class folder without image files
            (torchvision's ``ImageFolder`` rejects those too).
    """
    root = Path(split_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"dataset split folder not found: {root} "
                                f"(expected ImageNet layout <root>/<split>/<class>/<image>)")
    classes = class_folders(root)
    ignored = [Path(e.path) for e in sorted(os.scandir(root), key=lambda e: e.name) if not e.is_dir()]
    if not classes:
        raise ValueError(f"{root}: no class sub-folders found "
                         f"(expected ImageNet layout <root>/<split>/<class>/<image>)")

    samples: list[tuple[Path, int]] = []
    empty: list[str] = []
    for label, name in enumerate(classes):
        found = 0
        # Sorted walk as torchvision's make_dataset, so sample order matches it too; followlinks because
        # ImageNet copies are often assembled from symlinked class folders.
        for dirpath, _, filenames in sorted(os.walk(root / name, followlinks=True)):
            for fname in sorted(filenames):
                path = Path(dirpath) / fname
                if _is_image(path):
                    samples.append((path, label))
                    found += 1
                else:
                    ignored.append(path)
        if not found:
            empty.append(name)
    if not samples:
        raise ValueError(f"{root}: no image files found in {len(classes)} class folders "
                         f"(extensions {' '.join(IMAGE_EXTENSIONS)}; {len(ignored)} other files ignored)")
    if empty:
        shown = ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else "")
        raise ValueError(f"{root}: {len(empty)} class folder(s) contain no image files: {shown}")
    return FolderScan(root=root, classes=classes, samples=tuple(samples), ignored=tuple(ignored))


def check_num_classes(classes: Sequence[str], num_classes: int, where: str | os.PathLike) -> None:
    """Raise if the number of class folders differs from the model's ``num_classes``.

    A mismatch would silently mislabel every image (labels are positions in the sorted folder list), so it
    is always an error.

    Args:
        classes: the class names found (e.g. ``FolderScan.classes``).
        num_classes: the model's number of output classes.
        where: the folder the classes came from, for the message.
    """
    if len(classes) != num_classes:
        raise ValueError(f"{where}: found {len(classes)} class folders but the model has "
                         f"num_classes={num_classes}")


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to an RGB ``uint8`` array of shape ``[H, W, 3]``.

    8-bit images of every Pillow mode with a defined conversion (grey, palette, alpha, CMYK, YCbCr, HSV) are
    converted by Pillow; 16-bit grey images (``I;16*``: 16-bit PNG and TIFF) are scaled from 0..65535 to
    0..255. Other modes raise ValueError instead of coming out silently wrong: Pillow would clip 32-bit
    integer (``I``) and float (``F``) pixels to 0 or 255 (their range is not defined by the format), and its
    CIELAB (``LAB``) conversion swaps colours. Unreadable, truncated or unsupported files raise whatever PIL
    raises (``OSError`` in most cases); callers decide whether that is fatal.
    """
    with Image.open(path) as img:
        if img.mode in _SIXTEEN_BIT_GREY:
            grey = np.asarray(img).astype(np.uint32)
            return np.repeat(((grey * 255 + 32767) // 65535).astype(np.uint8)[..., None], 3, axis=2)
        if img.mode not in _EIGHT_BIT_MODES:
            raise ValueError(f"pixel format {img.mode}{_MODE_NAMES.get(img.mode, '')} has no defined conversion "
                             f"to 8-bit RGB; convert the image to 8-bit RGB first")
        # convert() forces the full decode, so truncated files fail here rather than later.
        return np.asarray(img.convert("RGB"))


def collect_images(inputs: Sequence[os.PathLike]) -> list[Path]:
    """Image files named by ``inputs``: files as given, folders searched recursively (sorted).

    Raises FileNotFoundError for a missing path, ValueError for a folder without images or a file given twice.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not images:
                raise ValueError(f"{path}: no image files in this folder (extensions {' '.join(IMAGE_EXTENSIONS)})")
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such image file or folder")
    seen = set()
    for path in found:
        key = path.resolve()
        if key in seen:
            raise ValueError(f"{path}: image given more than once")
        seen.add(key)
    return found
