"""Export the lean inference path (``model(x)`` -> logits) to a static-shape MindIR, AIR or ONNX file, and
verify it by running the written file on a random batch against the Cell.

Formats:

* MINDIR: everywhere. Loaded back with ``mindspore.load`` + ``nn.GraphCell`` for the check. The data
  settings (crop_pct, interpolation, mean, std, dataset path) and the class names are stored in the file's
  ``user_info`` so that ``infer.py`` can preprocess images and name classes without the config
  (:func:`read_mindir_meta`).
* AIR: Ascend only (the format is produced by the Ascend graph compiler). MindSpore cannot load AIR back,
  so an AIR file is reported as not verified; convert it with ATC and check it there.
* ONNX: needs the optional packages ``onnx`` and ``onnxruntime``. MindSpore 2.10's ONNX exporter cannot
  write two things in this model, which are handled here without changing what the model computes:
  exact GELU uses Erf (no converter): the export swaps in :class:`ErfFreeGELU` (error < 1e-6); and every
  ``Sort`` (PPT's token matching) is written as a ``TopK`` whose ``k`` initializer is always named ``k``,
  so several PP blocks produce conflicting initializers: :func:`_repair_sort_topk` computes each such ``k``
  in the graph as the length of the sorted axis instead. :mod:`src.onnx_graph` then rewrites the graph so
  that onnxruntime can fuse it (GELU as Erf, LayerNorm as LayerNormalization, opset 17) and stores the data
  settings in its ``metadata_props``. The file is then checked with onnxruntime.

Every file is written under a temporary name in the target folder and renamed into place only after the
check passed (max abs logit difference <= ``tolerance``); a file that fails the check is removed.
"""
import json
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

__all__ = ["FORMATS", "DEFAULT_TOLERANCE", "ExportError", "VerificationError", "ExportResult", "ErfFreeGELU",
           "output_path", "check_format_device", "export_model", "MindIRMeta", "read_mindir_meta", "MINDIR_INFO_KEY"]

FORMATS = {"MINDIR": ".mindir", "AIR": ".air", "ONNX": ".onnx"}
DEFAULT_TOLERANCE = 1e-4
MINDIR_INFO_KEY = "ppt_preprocess"  # user_info key of the JSON data settings in an exported MindIR


class ExportError(ValueError):
    """An export that cannot be done here (format, device, missing optional package, exporter limit)."""


class VerificationError(ExportError):
    """The written file does not compute what the Cell computes; the file has been removed."""


@dataclass(frozen=True)
class ExportResult:
    """Where the file went and how it was checked (``max_abs_diff`` is None when it could not be)."""
    path: Path
    size_bytes: int
    input_shape: tuple[int, ...]
    max_abs_diff: float | None
    tolerance: float
    note: str = ""

    def summary(self) -> str:
        size = f"{self.size_bytes / 2 ** 20:.2f} MiB"
        if self.max_abs_diff is None:
            check = f"NOT verified ({self.note})"
        else:
            check = f"verified: max |logits - Cell logits| = {self.max_abs_diff:.3g} <= {self.tolerance:g}"
            if self.note:
                check += f" ({self.note})"
        return f"wrote {self.path} ({size}, input {list(self.input_shape)} float32); {check}"


class ErfFreeGELU(nn.Cell):
    """Exact GELU ``x * Phi(x)`` without the Erf operator, for exporters that lack it (ONNX here).

    ``erfc(z) ~= t * P(t) * exp(-z^2)`` with ``t = 1 / (1 + p z)``, ``z = |x| / sqrt(2)`` (Abramowitz &
    Stegun 7.1.26, |error of erf| <= 1.5e-7); then ``GELU(x) = x - x/2 * erfc(z)`` for x >= 0 and
    ``x/2 * erfc(z)`` for x < 0, which keeps the small negative tail relatively accurate. Max abs deviation
    from exact GELU: < 1e-6 (tests/test_export.py). Division, not Reciprocal: the ONNX exporter has no
    Reciprocal either.
    """

    def construct(self, x: Tensor) -> Tensor:
        z = ops.abs(x) * 0.7071067811865476
        t = ops.div(ops.ones_like(z), 1.0 + 0.3275911 * z)
        poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
        half_tail = 0.5 * x * poly * ops.exp(-z * z)
        return ops.where(x >= 0, x - half_tail, half_tail)


def output_path(file_name: str | os.PathLike, file_format: str) -> Path:
    """``file_name`` with the format's extension (added unless already there, as ``mindspore.export`` does)."""
    fmt = _check_format(file_format)
    path = Path(file_name)
    return path if path.name.endswith(FORMATS[fmt]) else path.with_name(path.name + FORMATS[fmt])


def check_format_device(file_format: str, device_target: str) -> None:
    """Fail before any work when the format cannot be exported on ``device_target``."""
    fmt = _check_format(file_format)
    if fmt == "AIR" and device_target != "Ascend":
        raise ExportError(f"--file_format AIR: AIR files are produced by the Ascend graph compiler and need "
                          f"--device_target Ascend on an Ascend machine (got {device_target}); use MINDIR here")
    if fmt == "ONNX":
        _onnx_modules()


def export_model(model: nn.Cell, file_name: str | os.PathLike, file_format: str = "MINDIR",
                 batch_size: int = 1, *, data_info: Mapping[str, Any] | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, seed: int = 0, onnx_rewrite: bool = True) -> ExportResult:
    """Export ``model(x)`` for a static input ``[batch_size, in_chans, img_size, img_size]`` float32 and check it.

    Args:
        model: a :class:`~src.models.VisionTransformer` (weights loaded); it is put in inference mode.
        file_name: output path, with or without the format's extension.
        file_format: MINDIR, AIR or ONNX.
        batch_size: the fixed batch size of the exported graph.
        data_info: JSON-serialisable preprocessing settings and class names
            (:meth:`src.inference.Preprocess.to_dict`) stored in a MindIR (see :func:`read_mindir_meta`) or an
            ONNX file's metadata (see :func:`src.onnx_runtime.read_onnx_meta`).
        tolerance: largest accepted max abs difference between the file's and the Cell's logits.
        seed: seed of the random check batch.
        onnx_rewrite: ONNX only: rewrite the graph for onnxruntime (:mod:`src.onnx_graph`); False keeps
            MindSpore's graph (erf-free GELU, LayerNorm as primitive ops), e.g. for comparisons.

    Raises:
        ExportError: the format cannot be exported here, or nothing can be written at the target (checked first).
        VerificationError: the check failed (file removed).
    """
    fmt = _check_format(file_format)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ExportError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    if fmt == "AIR" and ms.get_context("device_target") != "Ascend":
        raise ExportError(f"AIR export needs an Ascend device, this context runs on "
                          f"{ms.get_context('device_target')}; use MINDIR here")
    target = output_path(file_name, fmt)
    _check_target(target)  # before the minutes of compiling, exporting and verifying
    onnx_mods = _onnx_modules() if fmt == "ONNX" else None

    model.set_train(False)
    shape = (batch_size, model.in_chans, model.img_size, model.img_size)
    batch = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    # The Cell's logits before any export-only rewrite: the file is compared with what the model computes.
    expected = model(Tensor(batch)).asnumpy()

    tmp_stem = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = tmp_stem.with_name(tmp_stem.name + FORMATS[fmt])
    try:
        note = ""
        if fmt == "MINDIR":
            ms.export(model, Tensor(batch), file_name=str(tmp_stem), file_format="MINDIR",
                      custom_func=_user_info_writer(data_info))
        elif fmt == "ONNX":
            with _erf_free_gelu(model):
                try:
                    ms.export(model, Tensor(batch), file_name=str(tmp_stem), file_format="ONNX")
                except RuntimeError as e:  # e.g. "Can not find key X in convert map": an op it cannot write
                    raise ExportError(f"ONNX export: MindSpore's exporter failed: {_first_line(e)}") from None
            _repair_sort_topk(tmp, onnx_mods[0])
            from .onnx_graph import GraphRewriteError, expected_patterns, finish_onnx_file  # needs onnx
            try:
                report = finish_onnx_file(tmp, rewrite=onnx_rewrite, expected=expected_patterns(model),
                                          data_info=data_info)
            except GraphRewriteError as e:
                raise ExportError(str(e)) from None
            note = f"rewritten for onnxruntime: {report.summary()}" if report else "ONNX uses an erf-free GELU"
        else:
            ms.export(model, Tensor(batch), file_name=str(tmp_stem), file_format="AIR")
        if not tmp.is_file():
            raise ExportError(f"mindspore.export did not write {tmp} (large models may be split into several "
                              f"files, which this exporter does not handle)")
        diff = None
        if fmt == "AIR":
            note = "MindSpore cannot load AIR back; convert it with ATC and check it there"
        else:
            got = _run_exported(tmp, fmt, batch)
            diff = _max_abs_diff(expected, got)
            if not diff <= tolerance:  # also catches NaN
                raise VerificationError(f"{target}: the exported {fmt} file disagrees with the model: max abs "
                                        f"logit difference {diff:.3g} > {tolerance:g}; file removed")
        try:
            os.replace(tmp, target)
        except OSError as e:  # the target changed since _check_target (e.g. a folder appeared)
            raise ExportError(f"{target}: cannot write the file ({e.strerror})") from e
    finally:
        for leftover in target.parent.glob(tmp_stem.name + "*"):
            leftover.unlink()
    return ExportResult(target, target.stat().st_size, shape, diff, tolerance, note)


@dataclass(frozen=True)
class MindIRMeta:
    """What a MindIR written by :func:`export_model` says about itself, read without loading the graph."""
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    info: dict[str, Any] | None  # the ``data_info`` given at export, or None


def read_mindir_meta(path: str | os.PathLike) -> MindIRMeta:
    """Input/output shapes and stored data settings of a single-input, single-output static MindIR."""
    proto = _read_mindir_proto(path)
    graph = proto.graph
    shapes = []
    for kind, values in (("input", graph.input), ("output", graph.output)):
        if len(values) != 1 or len(values[0].tensor) != 1:
            raise ValueError(f"{path}: expected a MindIR with one tensor {kind}, found {len(values)}")
        shapes.append(tuple(int(d) for d in values[0].tensor[0].dims))
    if len(shapes[0]) != 4 or any(d < 1 for d in shapes[0]):
        raise ValueError(f"{path}: expected a static [N, C, H, W] input, found {list(shapes[0])}")
    if len(shapes[1]) != 2 or shapes[1][0] != shapes[0][0]:
        raise ValueError(f"{path}: expected [N, num_classes] logits, found output {list(shapes[1])}")
    text = proto.user_info.get(MINDIR_INFO_KEY)
    info = None
    if text is not None:
        try:
            info = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: user_info '{MINDIR_INFO_KEY}' is not valid JSON ({e})") from None
    return MindIRMeta(shapes[0], shapes[1], info)


# --------------------------------------------------------------------------------------------- internals

def _check_format(file_format: str) -> str:
    fmt = str(file_format).upper()
    if fmt not in FORMATS:
        raise ExportError(f"file_format: expected one of {', '.join(FORMATS)}, got {file_format!r}")
    return fmt


def _check_target(target: Path) -> None:
    """The exported file can be put at ``target``: its folder exists and takes new files, and no folder has
    the file's name. Checked by creating (and removing) a file there: permission bits alone miss read-only
    mounts and do not apply to root."""
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{target}: output folder {target.parent} does not exist")
    if target.is_dir():
        raise ExportError(f"{target}: a folder of that name exists; choose another file name")
    try:
        fd, probe = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.probe-")
    except OSError as e:
        raise ExportError(f"{target}: cannot write in folder {target.parent} ({e.strerror})") from None
    os.close(fd)
    os.remove(probe)


def _onnx_modules() -> tuple[Any, Any]:
    """(onnx, onnxruntime), or a clear error: the ONNX path needs both (graph repair and verification)."""
    try:
        import onnx  # pylint: disable=import-outside-toplevel
        import onnxruntime  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise ExportError(f"ONNX export needs the optional packages onnx and onnxruntime ({e.name} is not "
                          f"installed): they repair MindSpore's Sort->TopK export and verify the file; "
                          f"install with: pip install onnx onnxruntime 'numpy<2'") from None
    return onnx, onnxruntime


def _user_info_writer(data_info: Mapping[str, Any] | None):
    """A ``custom_func`` for ``mindspore.export`` that stores ``data_info`` as JSON in the MindIR."""
    text = json.dumps(dict(data_info), sort_keys=True) if data_info is not None else None

    def write(proto: Any) -> None:
        if text is not None:
            proto.user_info[MINDIR_INFO_KEY] = text
    return write


@contextmanager
def _erf_free_gelu(model: nn.Cell) -> Iterator[None]:
    """Temporarily replace every exact ``nn.GELU`` in ``model`` by :class:`ErfFreeGELU`."""
    swapped: list[tuple[nn.Cell, str, nn.Cell]] = []
    for _, cell in model.cells_and_names():
        for name, child in list(cell.name_cells().items()):
            if isinstance(child, nn.GELU) and child.approximate == "none":  # nn.GELU's flag for exact
                swapped.append((cell, name, child))
    try:
        for parent, name, _ in swapped:
            setattr(parent, name, ErfFreeGELU())
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def _repair_sort_topk(path: Path, onnx: Any) -> None:
    """Give every TopK written for a Sort its own ``k``: the length of the sorted axis, computed in the graph.

    MindSpore names the k initializer of each Sort-as-TopK ``k``; with several PP blocks the names clash and
    onnxruntime either rejects the model or uses one block's value for all. Only TopK nodes can be repaired:
    any other clashing initializer is an error.
    """
    from onnx import helper, numpy_helper  # pylint: disable=import-outside-toplevel

    model = onnx.load(str(path))
    graph = model.graph
    counts: dict[str, int] = {}
    for init in graph.initializer:
        counts[init.name] = counts.get(init.name, 0) + 1
    clashing = {name for name, n in counts.items() if n > 1}
    if not clashing:
        return
    new_nodes = []
    for node in graph.node:
        bad = [i for i in node.input if i in clashing]
        if bad and (node.op_type != "TopK" or list(node.input[1:]) != bad):
            raise ExportError(f"ONNX export: MindSpore wrote several initializers named {bad[0]!r} used by "
                              f"{node.op_type} node {node.name!r}; this cannot be repaired")
        if bad:
            axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
            base = f"{node.name}/k"
            shape_out, k_out = f"{base}/shape", f"{base}/value"
            idx = numpy_helper.from_array(np.array([axis], dtype=np.int64), f"{base}/axis")
            graph.initializer.append(idx)
            new_nodes.append(helper.make_node("Shape", [node.input[0]], [shape_out], name=f"{base}/Shape"))
            new_nodes.append(helper.make_node("Gather", [shape_out, idx.name], [k_out], name=f"{base}/Gather",
                                              axis=0))
            node.input[1] = k_out
        new_nodes.append(node)
    keep = [init for init in graph.initializer if init.name not in clashing]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    graph_inputs = [i for i in graph.input if i.name not in clashing]
    del graph.input[:]
    graph.input.extend(graph_inputs)
    del graph.node[:]
    graph.node.extend(new_nodes)
    onnx.checker.check_model(model)
    path.chmod(0o600)  # mindspore.export writes its files read-only (0400); keep that mode afterwards
    onnx.save(model, str(path))
    path.chmod(0o400)


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


def _run_exported(path: Path, fmt: str, batch: np.ndarray) -> np.ndarray:
    """Run the written file on ``batch`` (MindIR with MindSpore, ONNX with onnxruntime)."""
    if fmt == "MINDIR":
        return nn.GraphCell(ms.load(str(path)))(Tensor(batch)).asnumpy()
    ort = _onnx_modules()[1]
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types: the written graph is not runnable
        raise VerificationError(f"onnxruntime cannot load the exported file: {_first_line(e)}; file removed") from None
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def _first_line(e: BaseException) -> str:
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


def _max_abs_diff(expected: np.ndarray, got: np.ndarray) -> float:
    if np.shape(got) != expected.shape:
        return float("inf")
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - expected)))
