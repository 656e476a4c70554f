"""MindSpore's exported graphs: MindIR (written and run everywhere, loaded with ``nn.GraphCell``) and AIR (the Ascend
graph compiler's format: written on Ascend only, and MindSpore cannot load it back).

A MindIR stores the data settings and class names as JSON in its ``user_info`` under
:data:`~src.deploy.meta.PREPROCESS_KEY`, read by :func:`read_mindir_meta` without loading the graph.
"""
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from .export import ExportError
from .meta import PREPROCESS_KEY, ExportedMeta, exported_meta
from .runtime import Predictor, Runtime

__all__ = ["read_mindir_meta", "MindIRPredictor", "MindIRRuntime", "AirRuntime"]


def read_mindir_meta(path: str | os.PathLike) -> ExportedMeta:
    """Input/output shapes and stored data settings of a single-input, single-output static MindIR."""
    proto = _read_mindir_proto(path)
    graph = proto.graph
    inputs = [tuple(int(d) for d in t.dims) for v in graph.input for t in v.tensor]
    outputs = [tuple(int(d) for d in t.dims) for v in graph.output for t in v.tensor]
    return exported_meta(path, inputs, outputs, proto.user_info.get(PREPROCESS_KEY), "a MindIR")


class MindIRPredictor(Predictor):
    """Runs an exported MindIR; its batch size and image size are fixed by the graph's input shape."""

    def __init__(self, path: str | os.PathLike):
        meta = read_mindir_meta(path)
        super().__init__(path, meta.input_shape, meta.output_shape[1], meta.info)
        self.graph = nn.GraphCell(ms.load(str(self.path)))

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.graph(Tensor(batch)).asnumpy()


class MindIRRuntime(Runtime):
    """MindIR: MindSpore's graph format, run by MindSpore on any device."""

    name, label, file_format, suffixes = "mindir", "MindIR", "MINDIR", (".mindir",)

    def export(self, model: nn.Cell, path: Path, batch: np.ndarray, data_info: Mapping[str, Any] | None) -> str:
        ms.export(model, Tensor(batch), file_name=str(path)[:-len(self.suffix)], file_format="MINDIR",
                  custom_func=_user_info_writer(data_info))
        return ""

    def open(self, path: str | os.PathLike, *, cfg: Mapping[str, Any] | None = None, batch_size: int = 1,
             threads: int | None = None) -> MindIRPredictor:
        return MindIRPredictor(path)

    def read_meta(self, path: str | os.PathLike) -> ExportedMeta:
        return read_mindir_meta(path)


class AirRuntime(Runtime):
    """AIR: written by the Ascend graph compiler for ATC; MindSpore cannot load it back."""

    name, label, file_format, suffixes = "air", "AIR", "AIR", (".air",)

    def check_available(self, device_target: str | None = None) -> None:
        device = device_target or ms.get_context("device_target")
        if device != "Ascend":
            raise ExportError(f"AIR export needs an Ascend device (AIR files are produced by the Ascend graph "
                              f"compiler), got {device}; use MINDIR here")

    def export(self, model: nn.Cell, path: Path, batch: np.ndarray, data_info: Mapping[str, Any] | None) -> str:
        ms.export(model, Tensor(batch), file_name=str(path)[:-len(self.suffix)], file_format="AIR")
        return "MindSpore cannot load AIR back; convert it with ATC and check it there"

    def run_written(self, path: Path, model: nn.Cell, batch: np.ndarray) -> None:
        return None

    def open(self, path: str | os.PathLike, *, cfg: Mapping[str, Any] | None = None, batch_size: int = 1,
             threads: int | None = None) -> Predictor:
        raise ValueError(f"{path}: MindSpore cannot run AIR files; convert it with ATC, or export a MINDIR")

    def read_meta(self, path: str | os.PathLike) -> ExportedMeta:
        raise ValueError(f"{path}: MindSpore cannot read AIR files; convert it with ATC, or export a MINDIR")


def _user_info_writer(data_info: Mapping[str, Any] | None):
    """A ``custom_func`` for ``mindspore.export`` that stores ``data_info`` as JSON in the MindIR."""
    text = json.dumps(dict(data_info), sort_keys=True) if data_info is not None else None

    def write(proto: Any) -> None:
        if text is not None:
            proto.user_info[PREPROCESS_KEY] = text
    return write


def _read_mindir_proto(path: str | os.PathLike) -> Any:
    from mindspore.train import mind_ir_pb2  # pylint: disable=import-outside-toplevel

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such MindIR file")
    proto = mind_ir_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as e:  # protobuf raises its own DecodeError type; any failure means "not a MindIR"
        raise ValueError(f"{path}: not a readable MindIR file ({type(e).__name__})") from None
    if not proto.HasField("graph"):
        raise ValueError(f"{path}: not a MindIR file (no graph)")
    return proto
