"""Classify image files with a checkpoint (through the model Cell) or an exported MindIR.

Images are preprocessed exactly as in evaluation (``src.data.transforms.eval_transforms``), batched to the
predictor's batch size (the last chunk padded with copies of its first image, whose outputs are dropped)
and turned into top-k class probabilities (softmax of the logits).

Class names, first match wins: ``--class_names FILE`` (one per line, exactly ``num_classes`` lines); the
ImageNet-1k names shipped in ``src/resources/imagenet_classes.txt`` (standard index order) when the model
has 1000 classes; the sorted class folder names of the built-in demo dataset (its label order) when the
config's or the MindIR's ``data.path`` is ``demo``. Otherwise it is an error: bare indices are easy to misread.
"""
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from .config import configured_spec
from .data import load_rgb, resolve_data_root, scan_image_folder
from .data.transforms import eval_transforms
from .export import read_mindir_meta

__all__ = ["IMAGENET_CLASSES_FILE", "Preprocess", "preprocess_from_config", "load_images",
           "load_class_names", "resolve_class_names", "CellPredictor", "MindIRPredictor", "predict",
           "topk_probs", "WEIGHT_SUFFIXES", "open_model", "classify"]

IMAGENET_CLASSES_FILE = Path(__file__).resolve().parent / "resources" / "imagenet_classes.txt"
_PREPROCESS_KEYS = ("img_size", "crop_pct", "interpolation", "mean", "std")


@dataclass(frozen=True)
class Preprocess:
    """Eval preprocessing of one model, plus the dataset path that names its classes (``demo`` or a folder)."""
    img_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    data_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (stored in exported MindIR files)."""
        return {"img_size": self.img_size, "crop_pct": self.crop_pct, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std), "data_path": self.data_path}

    @classmethod
    def from_dict(cls, info: Mapping[str, Any], source: str) -> "Preprocess":
        missing = [k for k in _PREPROCESS_KEYS if k not in info]
        if missing:
            raise ValueError(f"{source}: preprocessing settings lack {', '.join(missing)}")
        return cls(int(info["img_size"]), float(info["crop_pct"]), str(info["interpolation"]),
                   tuple(float(v) for v in info["mean"]), tuple(float(v) for v in info["std"]),
                   info.get("data_path"))


def preprocess_from_config(cfg: Mapping[str, Any]) -> Preprocess:
    data = cfg["data"]
    return Preprocess(configured_spec(cfg).img_size, data["crop_pct"], data["interpolation"], tuple(data["mean"]),
                      tuple(data["std"]), data["path"])


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


def load_class_names(path: str | os.PathLike, num_classes: int | None = None) -> list[str]:
    """One class name per line (trailing whitespace ignored); with ``num_classes`` the count must match."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class names file not found")
    names = [line.rstrip() for line in path.read_text(encoding="utf-8").splitlines()]
    while names and not names[-1]:
        names.pop()
    if any(not n for n in names):
        raise ValueError(f"{path}: line {names.index('') + 1} is empty; expected one class name per line")
    if num_classes is not None and len(names) != num_classes:
        raise ValueError(f"{path}: {len(names)} class names, but the model has {num_classes} classes")
    return names


def resolve_class_names(num_classes: int, class_names_file: str | os.PathLike | None = None,
                        data_path: str | None = None) -> list[str]:
    """Names of the model's classes (see the module docstring for the order of the sources)."""
    if class_names_file is not None:
        return load_class_names(class_names_file, num_classes)
    if num_classes == 1000:
        return load_class_names(IMAGENET_CLASSES_FILE, 1000)
    if data_path == "demo":
        classes = list(scan_image_folder(resolve_data_root("demo") / "val").classes)
        if len(classes) != num_classes:
            raise ValueError(f"the demo dataset has {len(classes)} classes but the model has {num_classes}; "
                             f"pass --class_names FILE")
        return classes
    raise ValueError(f"the model has {num_classes} classes (not ImageNet-1k's 1000) and its dataset is not the "
                     f"built-in demo: pass --class_names FILE with one name per line")


class CellPredictor:
    """Runs a model Cell on fixed-size batches (one graph compile)."""

    def __init__(self, model: nn.Cell, batch_size: int):
        model.set_train(False)
        self.model = model
        self.batch_size = batch_size
        self.input_shape = (batch_size, model.in_chans, model.img_size, model.img_size)
        self.num_classes = model.num_classes

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        _check_batch(batch, self.input_shape, "the model")
        return self.model(Tensor(batch)).asnumpy()


class MindIRPredictor:
    """Runs an exported MindIR; its batch size and image size are fixed by the graph's input shape."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta = read_mindir_meta(self.path)
        self.input_shape = meta.input_shape
        self.batch_size = meta.input_shape[0]
        self.num_classes = meta.output_shape[1]
        self.info = meta.info  # the data settings stored at export, or None
        self.graph = nn.GraphCell(ms.load(str(self.path)))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        _check_batch(batch, self.input_shape, str(self.path))
        return self.graph(Tensor(batch)).asnumpy()


def _check_batch(batch: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    """The graph was compiled for one shape: anything else is a clear error instead of a MindSpore trace."""
    if tuple(batch.shape) != shape or batch.dtype != np.float32:
        raise ValueError(f"{what} takes float32 input {list(shape)} (batch {shape[0]}, {shape[2]}x{shape[3]} "
                         f"px), got {batch.dtype} {list(batch.shape)}")


def predict(predictor: CellPredictor | MindIRPredictor, images: np.ndarray) -> np.ndarray:
    """Logits ``[N, num_classes]`` of ``images`` ``[N, 3, H, W]``, run in chunks of the predictor's batch size."""
    b = predictor.batch_size
    logits = []
    for start in range(0, len(images), b):
        chunk = images[start:start + b]
        n = len(chunk)
        if n < b:  # pad with copies of a real image: outputs are per image, the padding rows are dropped
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], b - n, axis=0)])
        logits.append(predictor(np.ascontiguousarray(chunk))[:n])
    return np.concatenate(logits)


def topk_probs(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Softmax probabilities and class indices of the ``k`` most likely classes, ``[N, k]`` each, best first."""
    k = min(k, logits.shape[-1])
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True)
    # Stable sort on -probs: equal probabilities keep index order, so the result is deterministic.
    idx = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return np.take_along_axis(probs, idx, axis=-1), idx


WEIGHT_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin", ".safetensors")
Predictor = CellPredictor | MindIRPredictor


def open_model(model_path: str | os.PathLike, cfg: Mapping[str, Any] | None = None,
               batch_size: int = 1) -> tuple[Predictor, Preprocess]:
    """A predictor for ``model_path`` and the preprocessing its inputs need.

    Weights (``.ckpt``, ``.pth``, ``.safetensors``) need ``cfg`` to build the model and run in batches of
    ``batch_size``. An exported ``.mindir`` fixes its own batch and image size; its preprocessing is ``cfg``'s
    (which must describe the exported model) or else the settings stored in it by ``export.py``.
    """
    from .factory import build_model  # the model zoo only for weights

    path = Path(model_path)
    if path.suffix.lower() != ".mindir":
        if path.suffix.lower() not in WEIGHT_SUFFIXES:
            raise ValueError(f"{path}: expected a .mindir or weights ({', '.join(WEIGHT_SUFFIXES)})")
        if cfg is None:
            raise ValueError(f"{path}: building the model of a checkpoint needs its config")
        return CellPredictor(build_model(cfg, str(path)), batch_size), preprocess_from_config(cfg)
    predictor = MindIRPredictor(path)
    if cfg is None:
        if predictor.info is None:
            raise ValueError(f"{path}: the file stores no preprocessing settings (not written by export.py); "
                             f"give the config of the exported model")
        return predictor, Preprocess.from_dict(predictor.info, str(path))
    pre = preprocess_from_config(cfg)
    if pre.img_size != predictor.input_shape[2] or cfg["model"]["num_classes"] != predictor.num_classes:
        raise ValueError(f"the config's model ({pre.img_size} px, {cfg['model']['num_classes']} classes) is not the "
                         f"one exported to {path} ({predictor.input_shape[2]} px, {predictor.num_classes} classes)")
    return predictor, pre


def classify(paths: Sequence[str | os.PathLike], predictor: Predictor, pre: Preprocess,
             class_names_file: str | os.PathLike | None = None, topk: int = 5) -> str:
    """The ``topk`` classes of every image with their probabilities, as the text ``infer.py`` prints."""
    names = resolve_class_names(predictor.num_classes, class_names_file, pre.data_path)
    probs, idx = topk_probs(predict(predictor, load_images(paths, pre)), topk)
    lines = []
    for path, p_row, i_row in zip(paths, probs, idx):
        lines.append(str(path))
        lines += [f"  {rank}. {p:7.2%}  {names[i]} (class {i})" for rank, (p, i) in enumerate(zip(p_row, i_row), 1)]
    return "\n".join(lines)
