"""What a deployed model file says about itself, checked the same way for every runtime.

An exported file (MindIR, ONNX, ...) stores its data settings and class names as one JSON object under
:data:`PREPROCESS_KEY` (a MindIR's ``user_info``, an ONNX file's ``metadata_props``); :class:`Preprocess` is that
object. :func:`exported_meta` checks what a runtime read from a file (one static ``[N, C, H, W]`` input, ``[N,
num_classes]`` logits, valid JSON settings) and :func:`check_batch` what a predictor is given.
"""
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..io.class_names import CLASS_NAMES_KEY, check_class_names

__all__ = ["PREPROCESS_KEY", "Preprocess", "ExportedMeta", "exported_meta", "stored_class_names", "check_batch"]

PREPROCESS_KEY = "ppt_preprocess"  # the metadata key of the JSON data settings in every exported file
_PREPROCESS_KEYS = ("img_size", "crop_pct", "interpolation", "mean", "std")


def stored_class_names(info: Mapping[str, Any] | None, source: str) -> tuple[str, ...] | None:
    """The class names in a file's stored settings (checked), or None."""
    names = None if info is None else info.get(CLASS_NAMES_KEY)
    return None if names is None else tuple(check_class_names(names, f"{source}: stored '{CLASS_NAMES_KEY}'"))


@dataclass(frozen=True)
class Preprocess:
    """Eval preprocessing of one model, plus what names its classes: the names stored with the model, and the
    dataset path (``demo`` or a folder) whose class folders gave its labels."""
    img_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    data_path: str | None = None
    class_names: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the ``data_info`` stored in exported files)."""
        return {"img_size": self.img_size, "crop_pct": self.crop_pct, "interpolation": self.interpolation,
                "mean": list(self.mean), "std": list(self.std), "data_path": self.data_path,
                CLASS_NAMES_KEY: None if self.class_names is None else list(self.class_names)}

    @classmethod
    def from_dict(cls, info: Mapping[str, Any], source: str) -> "Preprocess":
        missing = [k for k in _PREPROCESS_KEYS if k not in info]
        if missing:
            raise ValueError(f"{source}: preprocessing settings lack {', '.join(missing)}")
        return cls(int(info["img_size"]), float(info["crop_pct"]), str(info["interpolation"]),
                   tuple(float(v) for v in info["mean"]), tuple(float(v) for v in info["std"]),
                   info.get("data_path"), stored_class_names(info, source))

    @classmethod
    def stored_in(cls, info: Mapping[str, Any] | None, source: str) -> "Preprocess | None":
        """The settings a file stores, or None when it stores none (only class names, or nothing)."""
        if info is None or not any(k in info for k in _PREPROCESS_KEYS):
            return None
        return cls.from_dict(info, source)


@dataclass(frozen=True)
class ExportedMeta:
    """What a model file says about itself, read without running it. The shapes are None for weights (the
    config builds the model); ``info`` is the ``data_info`` given at export, or None (a foreign file)."""
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    info: dict[str, Any] | None


def exported_meta(path: Any, inputs: Sequence[tuple[Any, ...]], outputs: Sequence[tuple[Any, ...]],
                  settings: str | None, kind: str) -> ExportedMeta:
    """Check the input and output shapes a runtime read from ``path`` (a dimension is an int, or None/a name when
    not static) and parse its stored ``settings`` JSON; ``kind`` names the file type in messages ("a MindIR")."""
    for what, values in (("input", inputs), ("output", outputs)):
        if len(values) != 1:
            raise ValueError(f"{path}: expected {kind} with one tensor {what}, found {len(values)}")
    in_shape, out_shape = tuple(inputs[0]), tuple(outputs[0])
    if len(in_shape) != 4 or any(not isinstance(d, int) or d < 1 for d in in_shape):
        raise ValueError(f"{path}: expected a static [N, C, H, W] input, found {list(in_shape)}")
    if len(out_shape) != 2 or out_shape[0] != in_shape[0] or not isinstance(out_shape[1], int):
        raise ValueError(f"{path}: expected [N, num_classes] logits, found output {list(out_shape)}")
    info = None
    if settings is not None:
        try:
            info = json.loads(settings)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: metadata '{PREPROCESS_KEY}' is not valid JSON ({e})") from None
    return ExportedMeta(in_shape, out_shape, info)


def check_batch(batch: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    """A graph is compiled for one shape: anything else is a clear error instead of a runtime's trace."""
    if tuple(np.shape(batch)) != tuple(shape) or getattr(batch, "dtype", None) != np.float32:
        raise ValueError(f"{what} takes float32 input {list(shape)} (batch {shape[0]}, {shape[2]}x{shape[3]} "
                         f"px), got {getattr(batch, 'dtype', type(batch).__name__)} {list(np.shape(batch))}")
