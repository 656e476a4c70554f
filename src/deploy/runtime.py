"""Runtimes: one component per deployable file format, found by name or by file suffix.

A :class:`Runtime` writes a model in its format (:meth:`Runtime.export`, called by
:func:`src.deploy.export.export_model`, which adds what every format shares: temporary name, verification,
rename), opens a file as a :class:`Predictor` (:meth:`Runtime.open`) and reads what a file says about itself
(:meth:`Runtime.read_meta`). A predictor is a callable on a float32 numpy batch returning logits; it exposes its
fixed input shape and batch size, and the preprocessing settings and class names stored in the file.

The checks every runtime shares live here and in :mod:`src.deploy.meta`: the stored metadata
(:func:`~src.deploy.meta.exported_meta`), the batch shape (:meth:`Predictor.__call__`) and "the config's model is
not the exported one" (:func:`check_config_model`). A new runtime is one module with a :class:`Runtime` subclass,
one entry in ``src/deploy/__init__.py`` and one test.
"""
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from mindspore import nn

from ..config import configured_spec
from .meta import ExportedMeta, Preprocess, check_batch, stored_class_names

__all__ = ["Predictor", "Runtime", "register_runtime", "get_runtime", "runtime_for", "list_runtimes",
           "check_config_model"]

_RUNTIMES: dict[str, "Runtime"] = {}


class Predictor(ABC):
    """A model file ready to run: ``predictor(batch) -> logits`` for float32 ``batch`` of exactly
    ``input_shape``; ``info`` is the settings dict stored in the file (None when it stores none)."""

    def __init__(self, path: str | os.PathLike, input_shape: tuple[int, ...], num_classes: int,
                 info: dict[str, Any] | None):
        self.path = Path(path)
        self.input_shape = tuple(input_shape)
        self.batch_size = self.input_shape[0]
        self.num_classes = num_classes
        self.info = info

    @property
    def preprocess(self) -> Preprocess | None:
        """The preprocessing settings stored in the file, or None."""
        return Preprocess.stored_in(self.info, str(self.path))

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The class names stored in the file, or None."""
        return stored_class_names(self.info, str(self.path))

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        check_batch(batch, self.input_shape, str(self.path))
        return self.run(batch)

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits of a batch already checked to have the input shape."""


class Runtime(ABC):
    """One deployable format. ``name``: the registry's (and a report's) key; ``label``: how reports show it;
    ``file_format``: export.py's ``--file_format``; ``suffixes``: file name endings it opens, the first is the one
    it writes; ``needs_config``: the file holds weights only, so opening it needs the model's config."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    file_format: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()
    needs_config: ClassVar[bool] = False

    @property
    def suffix(self) -> str:
        return self.suffixes[0]

    def check_available(self, device_target: str | None = None) -> None:
        """Fail in one line before any work when this runtime cannot be used here (missing package, device)."""

    @abstractmethod
    def export(self, model: nn.Cell, path: Path, batch: np.ndarray, data_info: Mapping[str, Any] | None,
               **options: Any) -> str:
        """Write ``model`` for the static input ``batch`` to ``path`` (which ends with :attr:`suffix`), storing
        ``data_info``; returns a note for the export summary ("" for none)."""

    def run_written(self, path: Path, model: nn.Cell, batch: np.ndarray) -> np.ndarray | None:
        """The logits of the file just written at ``path`` on ``batch``, for the export's check against ``model``;
        None when this runtime cannot load what it writes."""
        return self.open(path)(batch)

    @abstractmethod
    def open(self, path: str | os.PathLike, *, cfg: Mapping[str, Any] | None = None, batch_size: int = 1,
             threads: int | None = None) -> Predictor:
        """A predictor for ``path``. ``cfg`` and ``batch_size`` build weights (:attr:`needs_config`); a file
        that fixes its shapes ignores them. ``threads``: intra-op threads of a runtime that takes them."""

    @abstractmethod
    def read_meta(self, path: str | os.PathLike) -> ExportedMeta:
        """What ``path`` says about itself, read without running it."""


def register_runtime(runtime: Runtime) -> Runtime:
    """Make ``runtime`` findable by its name and its suffixes (each name and suffix belongs to one runtime)."""
    taken = {s for r in _RUNTIMES.values() for s in r.suffixes}
    if not runtime.name or runtime.name in _RUNTIMES or not runtime.suffixes or taken & set(runtime.suffixes):
        raise ValueError(f"runtime {runtime.name!r}: its name is empty or taken, or it has no or taken suffixes")
    _RUNTIMES[runtime.name] = runtime
    return runtime


def list_runtimes() -> list[Runtime]:
    """The registered runtimes, in registration order."""
    return list(_RUNTIMES.values())


def get_runtime(name: str) -> Runtime:
    """The runtime called ``name``, or its ``file_format`` (``onnx``, ``ONNX``, ``mindir``, ...)."""
    for runtime in _RUNTIMES.values():
        if str(name).lower() in (runtime.name, runtime.file_format.lower()):
            return runtime
    raise ValueError(f"unknown runtime {name!r}; known: {', '.join(_RUNTIMES)}")


def runtime_for(path: str | os.PathLike) -> Runtime:
    """The runtime that opens ``path``, by its suffix."""
    suffix = Path(path).suffix.lower()
    for runtime in _RUNTIMES.values():
        if suffix in runtime.suffixes:
            return runtime
    known = ", ".join(s for r in _RUNTIMES.values() for s in r.suffixes)
    raise ValueError(f"{path}: expected a model file ending in one of {known}")


def check_config_model(cfg: Mapping[str, Any], predictor: Predictor) -> None:
    """A config used with an exported file must describe the exported model (image size and classes)."""
    img_size, classes = configured_spec(cfg).img_size, cfg["model"]["num_classes"]
    if img_size != predictor.input_shape[2] or classes != predictor.num_classes:
        raise ValueError(f"the config's model ({img_size} px, {classes} classes) is not the one exported to "
                         f"{predictor.path} ({predictor.input_shape[2]} px, {predictor.num_classes} classes)")

