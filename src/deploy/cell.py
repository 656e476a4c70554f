"""The MindSpore Cell as a runtime: weights files (``.ckpt``, and PyTorch / timm files to read), run in-process by
the model the config builds. Its export is a ``.ckpt`` with the class names of ``data_info`` (the config gives
the preprocessing of weights, so no other setting is stored)."""
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from mindspore import Tensor, nn

from ..factory import build_model
from ..io.checkpoint import load_state_dict, load_weights, read_class_names, save_weights
from ..io.class_names import CLASS_NAMES_KEY
from .meta import ExportedMeta
from .runtime import Predictor, Runtime

__all__ = ["WEIGHT_SUFFIXES", "CellPredictor", "CellRuntime"]

WEIGHT_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin", ".safetensors")


class CellPredictor(Predictor):
    """Runs a model Cell on fixed-size batches (one graph compile). ``path``: the weights it was built from."""

    def __init__(self, model: nn.Cell, batch_size: int, path: str | os.PathLike | None = None):
        model.set_train(False)
        self.model = model
        names = read_class_names(path) if path is not None else None
        super().__init__(path if path is not None else "the model",
                         (batch_size, model.in_chans, model.img_size, model.img_size), model.num_classes,
                         None if names is None else {CLASS_NAMES_KEY: names})

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.model(Tensor(batch)).asnumpy()


class CellRuntime(Runtime):
    """Weights run by the model Cell; opening them needs the model's config."""

    name, label, file_format, suffixes, needs_config = "cell", "Cell", "CKPT", WEIGHT_SUFFIXES, True

    def export(self, model: nn.Cell, path: Path, batch: np.ndarray, data_info: Mapping[str, Any] | None) -> str:
        names = (data_info or {}).get(CLASS_NAMES_KEY)
        save_weights(model, path, meta=None if names is None else {CLASS_NAMES_KEY: list(names)})
        return "weights; the config gives their preprocessing"

    def run_written(self, path: Path, model: nn.Cell, batch: np.ndarray) -> np.ndarray:
        """The written weights loaded into ``model`` itself (its own weights are put back afterwards)."""
        own = {name: param.asnumpy() for name, param in model.parameters_and_names()}
        try:
            load_weights(model, path)
            return model(Tensor(batch)).asnumpy()
        finally:
            load_state_dict(model, own, source="the model's own weights")

    def open(self, path: str | os.PathLike, *, cfg: Mapping[str, Any] | None = None, batch_size: int = 1,
             threads: int | None = None) -> CellPredictor:
        if cfg is None:
            raise ValueError(f"{path}: building the model of a checkpoint needs its config")
        return CellPredictor(build_model(cfg, str(path)), batch_size, path)

    def read_meta(self, path: str | os.PathLike) -> ExportedMeta:
        names = read_class_names(path)
        return ExportedMeta(None, None, None if names is None else {CLASS_NAMES_KEY: names})
