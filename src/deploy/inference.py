"""Classify image files with any model file a runtime opens (:mod:`src.deploy.runtime`: weights through the model
Cell, an exported MindIR, an exported ONNX file run by onnxruntime, ...).

Images are preprocessed exactly as in evaluation (``src.data.transforms.eval_transforms``), batched to the
predictor's batch size (the last chunk padded with copies of its first image, whose outputs are dropped)
and turned into top-k class probabilities (softmax of the logits).

Class names (:func:`resolve_class_names`), first match wins: a names file the caller gives (one name per line,
exactly ``num_classes`` lines; if the model file stores other names, a warning says so and the file wins); the
names stored in the model file (a checkpoint's metadata, or the ``data_info`` of an exported MindIR or ONNX
file: :attr:`Preprocess.class_names`); the sorted class folders of the model's dataset (``data.path``: its
training split, else its validation split) when that folder is on this machine (``demo`` is generated on
first use); the ImageNet-1k names (``src/io/resources/imagenet_classes.txt``) for 1000 classes. Otherwise it is
an error (:class:`~src.io.class_names.MissingClassNames`): bare indices are easy to misread.
"""
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..config import SCHEMA, configured_spec
from ..data import class_folders, load_rgb, resolve_data_root
from ..data.transforms import eval_transforms
from ..io.checkpoint import read_class_names
from ..io.class_names import (
    IMAGENET_NUM_CLASSES,
    MissingClassNames,
    check_class_names,
    describe_difference,
    imagenet_class_names,
    load_class_names,
)
from .meta import Preprocess
from .runtime import Predictor, check_config_model, runtime_for

__all__ = ["preprocess_from_config", "load_images", "ClassNames", "label_splits", "find_class_names",
           "resolve_class_names", "weights_class_names", "predict", "topk_probs", "MissingSettings", "open_model",
           "classify"]


def preprocess_from_config(cfg: Mapping[str, Any], weights: str | os.PathLike | None = None) -> Preprocess:
    """The config's eval preprocessing, with the class names stored in ``weights`` (if any)."""
    data = cfg["data"]
    names = read_class_names(weights) if weights is not None else None
    return Preprocess(configured_spec(cfg).img_size, data["crop_pct"], data["interpolation"], tuple(data["mean"]),
                      tuple(data["std"]), data["path"], None if names is None else tuple(names))


def load_images(paths: Sequence[str | os.PathLike], pre: Preprocess) -> np.ndarray:
    """Image files -> float32 ``[N, 3, img_size, img_size]``, as the eval pipeline prepares them (the one
    image loader of inference and visualisation)."""
    ops = eval_transforms(pre.img_size, pre.crop_pct, pre.interpolation, pre.mean, pre.std)
    out = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: no such image file")
        try:
            img = load_rgb(path)
        except Exception as e:  # PIL raises many types for unreadable files; each is reported, not skipped
            raise ValueError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None
        for op in ops:
            img = op(img)
        out.append(np.asarray(img, dtype=np.float32))
    return np.stack(out)


@dataclass(frozen=True)
class ClassNames:
    """A model's class names, and where they came from (for messages and reports: a file name, "the metadata of
    w.ckpt", "the class folders of /data/train", "the ImageNet-1k list")."""
    names: tuple[str, ...]
    source: str


def label_splits(cfg: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """The dataset splits whose class folders name a model's classes: the training split (its folders gave the
    labels), then the validation split; the config's, or the defaults without one."""
    train = cfg["train"] if cfg is not None else {k: SCHEMA["train"][k].default for k in ("train_split", "val_split")}
    return train["train_split"], train["val_split"]


def _dataset_class_names(data_path: str | None, splits: Sequence[str], num_classes: int) -> ClassNames | None:
    """The sorted class folders of the first of ``splits`` found under ``data_path``, or None when the dataset
    is not on this machine (``demo`` is generated)."""
    if not data_path:
        return None
    root = resolve_data_root("demo") if data_path == "demo" else Path(data_path).expanduser()
    for split in splits:
        folder = root / split
        if folder.is_dir():
            names = check_class_names(class_folders(folder), f"{folder}: class folders", num_classes)
            return ClassNames(tuple(names), f"the class folders of {folder}")
    return None


def find_class_names(num_classes: int, pre: Preprocess, names_file: str | os.PathLike | None = None, *,
                     model: str = "the model", splits: Sequence[str] | None = None) -> ClassNames | None:
    """The names of the model's ``num_classes`` classes from the first source that has them (see the module
    docstring), or None. ``pre`` holds the stored names and the dataset path; ``model`` names the model file
    in messages; ``splits`` default to :func:`label_splits`. Warns when ``names_file`` disagrees with the
    stored names; a source with another number of names, or a name twice, is a one-line ValueError."""
    if names_file is not None:
        given = tuple(load_class_names(names_file, num_classes))
        if pre.class_names is not None and pre.class_names != given:
            warnings.warn(f"{names_file}: the class names differ from those stored in {model} "
                          f"({describe_difference(given, pre.class_names)}); using {names_file}'s", stacklevel=2)
        return ClassNames(given, str(names_file))
    if pre.class_names is not None:
        names = check_class_names(pre.class_names, f"{model}: stored class names", num_classes)
        return ClassNames(tuple(names), f"the metadata of {model}")
    found = _dataset_class_names(pre.data_path, label_splits() if splits is None else splits, num_classes)
    if found is None and num_classes == IMAGENET_NUM_CLASSES:
        found = ClassNames(tuple(imagenet_class_names()), "the ImageNet-1k list")
    return found


def weights_class_names(num_classes: int, weights: str | os.PathLike,
                        names_file: str | os.PathLike | None = None) -> ClassNames | None:
    """The names an export stores: ``names_file`` (one per line, as convert.py reads it) or those stored in
    ``weights``, or None when neither names them -- never a dataset's folders, which may not be the ones the
    weights were trained on. Either must have ``num_classes`` names; a names file that disagrees with the stored
    names is refused (one line naming both files), since one of them would mislabel the exported model."""
    stored = read_class_names(weights)
    if stored is not None:
        stored = check_class_names(stored, f"{weights}: stored class names", num_classes)
    if names_file is None:
        return None if stored is None else ClassNames(tuple(stored), f"the metadata of {weights}")
    given = load_class_names(names_file, num_classes)
    if stored is not None and stored != given:
        raise ValueError(f"{names_file}: the class names differ from those stored in {weights} "
                         f"({describe_difference(given, stored)}); expected the same names in the same order")
    return ClassNames(tuple(given), str(names_file))


def resolve_class_names(num_classes: int, pre: Preprocess, names_file: str | os.PathLike | None = None, *,
                        model: str = "the model", splits: Sequence[str] | None = None) -> ClassNames:
    """:func:`find_class_names`, or :class:`~src.io.class_names.MissingClassNames` when no source has them."""
    found = find_class_names(num_classes, pre, names_file, model=model, splits=splits)
    if found is None:
        dataset = (f"its dataset {pre.data_path} has no class folders on this machine" if pre.data_path
                   else "it names no dataset")
        raise MissingClassNames(f"{model}: nothing names its {num_classes} classes: it stores no class names, "
                                f"{dataset}, and it is not an ImageNet-1k model ({IMAGENET_NUM_CLASSES} classes)")
    return found


def predict(predictor: Any, images: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
    """Logits ``[N, num_classes]`` of ``images`` ``[N, 3, H, W]``, run in chunks of the predictor's batch size
    (every chunk one shape: graph mode compiles once). A predictor is anything with a ``batch_size`` that maps
    a batch to per-image outputs; one returning a tuple of arrays (e.g. logits and PPT statistics) gives a
    tuple of arrays."""
    b = predictor.batch_size
    parts = []
    for start in range(0, len(images), b):
        chunk = images[start:start + b]
        n = len(chunk)
        if n < b:  # pad with copies of a real image: outputs are per image, the padding rows are dropped
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], b - n, axis=0)])
        out = predictor(np.ascontiguousarray(chunk))
        parts.append(tuple(o[:n] for o in out) if isinstance(out, tuple) else out[:n])
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate(column) for column in zip(*parts))
    return np.concatenate(parts)


def topk_probs(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and class indices of the ``k`` most likely classes, ``[N, k]`` each, best first."""
    k = min(k, logits.shape[-1])
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    # Stable sort on -probs: equal probabilities keep index order, so the result is deterministic.
    idx = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return np.take_along_axis(probs, idx, axis=-1), idx


class MissingSettings(ValueError):
    """An exported file without stored preprocessing settings (not written by export.py) and no config."""


def open_model(model_path: str | os.PathLike, cfg: Mapping[str, Any] | None = None,
               batch_size: int = 1) -> tuple[Predictor, Preprocess]:
    """A predictor for ``model_path`` (opened by the runtime of its suffix) and the preprocessing its inputs need.

    Weights (``.ckpt``, ``.pth``, ``.safetensors``) need ``cfg`` to build the model and run in batches of
    ``batch_size``. An exported file (``.mindir``, ``.onnx``) fixes its own batch and image size; its
    preprocessing is ``cfg``'s (which must describe the exported model) or else the settings stored in it by
    ``export.py`` (:class:`MissingSettings` for a file without them). Either way the returned
    :class:`Preprocess` holds the class names the file stores (None if it stores none).
    """
    predictor = runtime_for(model_path).open(model_path, cfg=cfg, batch_size=batch_size)
    if cfg is None:
        pre = predictor.preprocess
        if pre is None:
            raise MissingSettings(f"{model_path}: the file stores no preprocessing settings (not written by "
                                  f"export.py), so the config of the exported model must give them")
        return predictor, pre
    check_config_model(cfg, predictor)
    return predictor, replace(preprocess_from_config(cfg), class_names=predictor.class_names)


def classify(paths: Sequence[str | os.PathLike], predictor: Predictor, pre: Preprocess, names: Sequence[str],
             topk: int = 5) -> str:
    """The ``topk`` classes of every image with their probabilities and ``names``, as the text ``infer.py``
    prints."""
    probs, idx = topk_probs(predict(predictor, load_images(paths, pre)), topk)
    lines = []
    for path, p_row, i_row in zip(paths, probs, idx):
        lines.append(str(path))
        lines += [f"  {rank}. {p:7.2%}  {names[i]} (class {i})" for rank, (p, i) in enumerate(zip(p_row, i_row), 1)]
    return "\n".join(lines)
