"""The ONNX runtime: export through MindSpore's ONNX exporter, run with onnxruntime, and measure the CPU's matmul
rate for MAC-utilisation (roofline) figures.

* Export (:class:`OnnxRuntime`): MindSpore 2.10's ONNX exporter cannot write two things in this model, which are
  handled here without changing what the model computes: exact GELU uses Erf (no converter): the export swaps in
  :class:`ErfFreeGELU` (error < 1e-6); and every ``Sort`` (PPT's token matching) is written as a ``TopK`` whose
  ``k`` initializer is always named ``k``, so several PP blocks produce conflicting initializers:
  :func:`_repair_sort_topk` computes each such ``k`` in the graph as the length of the sorted axis instead.
  :mod:`src.deploy.onnx_graph` then rewrites the graph so that onnxruntime can fuse it (GELU as Erf, LayerNorm as
  LayerNormalization, opset 17) and stores the data settings in its ``metadata_props``.
* :func:`read_onnx_meta`: input/output shapes and the stored settings (None for a foreign ``.onnx``), read
  without onnxruntime (needs the ``onnx`` package).
* :class:`OnnxPredictor`: a :class:`~src.deploy.runtime.Predictor` on an onnxruntime CPU session.
* :func:`matmul_macs_per_second` and :func:`mac_utilisation`: how close a model runs to the machine's matmul
  speed, ``images/s x MACs per image / MAC rate of a large float32 matmul`` measured in the same process with
  the same onnxruntime and thread count. 100 % would mean every MAC of the model ran as fast as one big
  matmul and nothing else took time.

onnxruntime and onnx are optional (``pip install -r requirements-onnx.txt``); without them these functions
raise :class:`OnnxRuntimeMissing` (one line, with that command).
"""
import functools
import os
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from ..mslog import first_line
from ..timing import timed_call
from .export import ExportError
from .meta import PREPROCESS_KEY, ExportedMeta, exported_meta
from .onnx_graph import ERFC_COEFFS, ERFC_P, INV_SQRT2, GraphRewriteError, expected_patterns, finish_onnx_file
from .runtime import Predictor, Runtime

__all__ = ["INSTALL_HINT", "OnnxRuntimeMissing", "read_onnx_meta", "require_onnxruntime", "OnnxPredictor",
           "OnnxRuntime", "ErfFreeGELU", "MATMUL_SIZE", "matmul_roof", "matmul_macs_per_second", "mac_utilisation"]

INSTALL_HINT = "pip install -r requirements-onnx.txt"
MATMUL_SIZE = (2048, 1024, 1024)  # [M, K] x [K, N] of the roof: large enough to run at the BLAS peak


class OnnxRuntimeMissing(ImportError, ValueError):
    """An optional package (onnxruntime or onnx) is not installed. A ValueError too, so command-line tools
    report it in one line like other usage errors."""


def read_onnx_meta(path: str | os.PathLike) -> ExportedMeta:
    """Shapes and stored data settings of a single-input, single-output, static-shape ``.onnx`` file."""
    onnx = _import("onnx")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file
        raise ValueError(f"{path}: not a readable ONNX file ({type(e).__name__})") from None
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    inputs = [_dims(i) for i in graph.input if i.name not in init_names]
    outputs = [_dims(o) for o in graph.output]
    props = {p.key: p.value for p in model.metadata_props}
    return exported_meta(path, inputs, outputs, props.get(PREPROCESS_KEY), "an ONNX model")


def require_onnxruntime() -> None:
    """Fail early, in one line with the install command, when onnxruntime or onnx is missing."""
    _import("onnx")
    _import("onnxruntime")


class OnnxPredictor(Predictor):
    """Runs an exported ``.onnx`` file on onnxruntime's CPU provider; batch size and image size are fixed by
    the graph's input shape. ``threads``: onnxruntime's intra-op threads (None = its default, one per core)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        ort = _import("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: expected an int >= 1 or None, got {threads!r}")
        try:
            self.session = ort.InferenceSession(str(path), _session_options(ort, threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types (invalid graph, unknown op, ...)
            raise ValueError(f"{path}: onnxruntime cannot load it: {first_line(e)}") from None
        inputs = self.session.get_inputs()
        meta = exported_meta(path, [_shape_of(i.shape) for i in inputs],
                             [_shape_of(o.shape) for o in self.session.get_outputs()],
                             self.session.get_modelmeta().custom_metadata_map.get(PREPROCESS_KEY), "an ONNX model")
        super().__init__(path, meta.input_shape, meta.output_shape[1], meta.info)
        self.input_name = inputs[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


class OnnxRuntime(Runtime):
    """ONNX: exported by MindSpore (repaired and rewritten here), run by onnxruntime on the CPU."""

    name, label, file_format, suffixes = "onnx", "ONNX", "ONNX", (".onnx",)

    def check_available(self, device_target: str | None = None) -> None:
        require_onnxruntime()

    def export(self, model: nn.Cell, path: Path, batch: np.ndarray, data_info: Mapping[str, Any] | None,
               onnx_rewrite: bool = True) -> str:
        """``onnx_rewrite``: rewrite the graph for onnxruntime (:mod:`src.deploy.onnx_graph`); False keeps
        MindSpore's graph (erf-free GELU, LayerNorm as primitive ops), e.g. for comparisons."""
        with _erf_free_gelu(model):
            try:
                ms.export(model, Tensor(batch), file_name=str(path)[:-len(self.suffix)], file_format="ONNX")
            except RuntimeError as e:  # e.g. "Can not find key X in convert map": an op it cannot write
                raise ExportError(f"ONNX export: MindSpore's exporter failed: {first_line(e)}") from None
        if not path.is_file():
            return ""  # export_model reports the missing file
        _repair_sort_topk(path, _import("onnx"))
        try:
            report = finish_onnx_file(path, rewrite=onnx_rewrite, expected=expected_patterns(model),
                                      data_info=data_info)
        except GraphRewriteError as e:
            raise ExportError(str(e)) from None
        return f"rewritten for onnxruntime: {report.summary()}" if report else "ONNX uses an erf-free GELU"

    def open(self, path: str | os.PathLike, *, cfg: Mapping[str, Any] | None = None, batch_size: int = 1,
             threads: int | None = None) -> OnnxPredictor:
        return OnnxPredictor(path, threads)

    def read_meta(self, path: str | os.PathLike) -> ExportedMeta:
        return read_onnx_meta(path)


def matmul_roof(size: tuple[int, int, int] = MATMUL_SIZE, threads: int | None = None) -> tuple[Any, int]:
    """A zero-argument call running one large float32 matmul ``[M, K] x [K, N]`` (a Linear layer: the weight
    is a constant) in onnxruntime on the CPU provider with ``threads`` intra-op threads, and its MACs."""
    ort = _import("onnxruntime")
    onnx = _import("onnx")
    from onnx import TensorProto, helper, numpy_helper  # pylint: disable=import-outside-toplevel

    m, k, n = (int(v) for v in size)
    if min(m, k, n) < 1:
        raise ValueError(f"matmul roof: expected positive size, got {size}")
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, onnx.IR_VERSION, 10)
    session = ort.InferenceSession(model.SerializeToString(), _session_options(ort, threads),
                                   providers=["CPUExecutionProvider"])
    feed = {"x": rng.standard_normal((m, k)).astype(np.float32)}
    return functools.partial(session.run, None, feed), m * k * n


def matmul_macs_per_second(seconds_budget: float = 2.0, size: tuple[int, int, int] = MATMUL_SIZE,
                           threads: int | None = None) -> float:
    """MACs per second of :func:`matmul_roof` in onnxruntime.

    Runs it repeatedly for about ``seconds_budget`` seconds (after one warm-up call) and returns the median
    rate over the calls. Use it as the roof of :func:`mac_utilisation`: measure it in the same process and,
    on a shared machine, interleaved with the model timings it is compared to.
    """
    if not seconds_budget > 0:
        raise ValueError(f"matmul_macs_per_second: expected a positive budget, got {seconds_budget}")
    call, macs = matmul_roof(size, threads)
    call()
    times: list[float] = []
    deadline = time.perf_counter() + seconds_budget
    while not times or (time.perf_counter() < deadline and len(times) < 1000):
        times.append(timed_call(call)[1])
    return macs / statistics.median(times)


def mac_utilisation(images_per_second: float, macs_per_image: float, macs_per_second: float) -> float:
    """Share (0..1, can exceed 1 only through noise) of the matmul rate a model's MACs run at."""
    return images_per_second * macs_per_image / macs_per_second


# --------------------------------------------------------------------------------------------- internals

def _import(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        raise OnnxRuntimeMissing(f"running ONNX files needs the optional package {name}: {INSTALL_HINT}") from None


def _session_options(ort: Any, threads: int | None) -> Any:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: shape-merge warnings of contrib ops are noise here
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


def _dims(value_info: Any) -> tuple[Any, ...]:
    tt = value_info.type.tensor_type
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)


def _shape_of(shape: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(d if isinstance(d, int) else None for d in shape)


class ErfFreeGELU(nn.Cell):
    """Exact GELU ``x * Phi(x)`` without the Erf operator, for exporters that lack it (ONNX here).

    ``erfc(z) ~= t * P(t) * exp(-z^2)`` with ``t = 1 / (1 + p z)``, ``z = |x| / sqrt(2)`` (Abramowitz &
    Stegun 7.1.26, |error of erf| <= 1.5e-7); then ``GELU(x) = x - x/2 * erfc(z)`` for x >= 0 and
    ``x/2 * erfc(z)`` for x < 0, which keeps the small negative tail relatively accurate. Max abs deviation
    from exact GELU: < 1e-6 (tests/unit/test_onnx_runtime.py). Division, not Reciprocal: the ONNX exporter has no
    Reciprocal either.
    """

    def construct(self, x: Tensor) -> Tensor:
        z = ops.abs(x) * INV_SQRT2
        t = ops.div(ops.ones_like(z), 1.0 + ERFC_P * z)
        poly = t * ERFC_COEFFS[-1]
        for coeff in ERFC_COEFFS[-2::-1]:  # Horner, innermost first: t * (a0 + t * (a1 + ... t * a4))
            poly = t * (coeff + poly)
        half_tail = 0.5 * x * poly * ops.exp(-z * z)
        return ops.where(x >= 0, x - half_tail, half_tail)


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
