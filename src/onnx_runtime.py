"""Run an exported ``.onnx`` file with onnxruntime, read what it says about itself, and measure the CPU's
matmul rate for MAC-utilisation (roofline) figures.

* :func:`read_onnx_meta`: input/output shapes and the preprocessing settings ``export.py`` stored in the file's
  ``metadata_props`` (None for a foreign ``.onnx``), read without onnxruntime (needs the ``onnx`` package).
* :class:`OnnxPredictor`: the interface of :class:`src.inference.MindIRPredictor` (``path``, ``input_shape``,
  ``batch_size``, ``num_classes``, ``info``; ``predictor(batch) -> logits``) on an onnxruntime CPU session.
* :func:`matmul_macs_per_second` and :func:`mac_utilisation`: how close a model runs to the machine's matmul
  speed, ``images/s x MACs per image / MAC rate of a large float32 matmul`` measured in the same process with
  the same onnxruntime and thread count. 100 % would mean every MAC of the model ran as fast as one big
  matmul and nothing else took time.

onnxruntime and onnx are optional (``pip install -r requirements-onnx.txt``); without them these functions
raise :class:`OnnxRuntimeMissing` (one line, with that command).
"""
import functools
import json
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .timing import timed_call

__all__ = ["INSTALL_HINT", "OnnxRuntimeMissing", "OnnxMeta", "read_onnx_meta", "require_onnxruntime", "OnnxPredictor",
           "MATMUL_SIZE", "matmul_roof", "matmul_macs_per_second", "mac_utilisation", "time_onnx_files"]

INSTALL_HINT = "pip install -r requirements-onnx.txt"
MATMUL_SIZE = (2048, 1024, 1024)  # [M, K] x [K, N] of the roof: large enough to run at the BLAS peak
PREPROCESS_KEY = "ppt_preprocess"  # same key as src.onnx_graph.PREPROCESS_KEY and the MindIR's user_info


class OnnxRuntimeMissing(ImportError, ValueError):
    """An optional package (onnxruntime or onnx) is not installed. A ValueError too, so command-line tools
    report it in one line like other usage errors."""


@dataclass(frozen=True)
class OnnxMeta:
    """What an ``.onnx`` file says about itself (same fields as :class:`src.export.MindIRMeta`)."""
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    info: dict[str, Any] | None  # the ``data_info`` given at export, or None (foreign file)


def read_onnx_meta(path: str | os.PathLike) -> OnnxMeta:
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
    inputs = [(i.name, _dims(i)) for i in graph.input if i.name not in init_names]
    outputs = [(o.name, _dims(o)) for o in graph.output]
    props = {p.key: p.value for p in model.metadata_props}
    return _meta(path, inputs, outputs, props)


def require_onnxruntime() -> None:
    """Fail early, in one line with the install command, when onnxruntime or onnx is missing."""
    _import("onnx")
    _import("onnxruntime")


class OnnxPredictor:
    """Runs an exported ``.onnx`` file on onnxruntime's CPU provider; batch size and image size are fixed by
    the graph's input shape. ``threads``: onnxruntime's intra-op threads (None = its default, one per core)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        ort = _import("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: expected an int >= 1 or None, got {threads!r}")
        try:
            self.session = ort.InferenceSession(str(self.path), _session_options(ort, threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's own exception types (invalid graph, unknown op, ...)
            raise ValueError(f"{self.path}: onnxruntime cannot load it: {_first_line(e)}") from None
        inputs = [(i.name, _shape_of(i.shape)) for i in self.session.get_inputs()]
        outputs = [(o.name, _shape_of(o.shape)) for o in self.session.get_outputs()]
        meta = _meta(self.path, inputs, outputs, self.session.get_modelmeta().custom_metadata_map)
        self.input_name = inputs[0][0]
        self.input_shape = meta.input_shape
        self.batch_size = meta.input_shape[0]
        self.num_classes = meta.output_shape[1]
        self.info = meta.info  # the data settings stored at export, or None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        shape = self.input_shape
        if tuple(np.shape(batch)) != shape or getattr(batch, "dtype", None) != np.float32:
            raise ValueError(f"{self.path} takes float32 input {list(shape)} (batch {shape[0]}, {shape[2]}x{shape[3]} "
                             f"px), got {getattr(batch, 'dtype', type(batch).__name__)} {list(np.shape(batch))}")
        return self.session.run(None, {self.input_name: batch})[0]


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


def _meta(path: Path, inputs: Sequence[tuple[str, tuple[Any, ...]]], outputs: Sequence[tuple[str, tuple[Any, ...]]],
          props: dict[str, str]) -> OnnxMeta:
    for kind, values in (("input", inputs), ("output", outputs)):
        if len(values) != 1:
            raise ValueError(f"{path}: expected an ONNX model with one {kind}, found {len(values)}")
    in_shape, out_shape = inputs[0][1], outputs[0][1]
    if len(in_shape) != 4 or any(not isinstance(d, int) or d < 1 for d in in_shape):
        raise ValueError(f"{path}: expected a static [N, C, H, W] input, found {list(in_shape)}")
    if len(out_shape) != 2 or out_shape[0] != in_shape[0] or not isinstance(out_shape[1], int):
        raise ValueError(f"{path}: expected [N, num_classes] logits, found output {list(out_shape)}")
    info = None
    text = props.get(PREPROCESS_KEY)
    if text is not None:
        try:
            info = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: metadata '{PREPROCESS_KEY}' is not valid JSON ({e})") from None
    return OnnxMeta(tuple(in_shape), tuple(out_shape), info)


def _first_line(e: BaseException) -> str:
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


def time_onnx_files(paths: Sequence[str | os.PathLike], rounds: int = 5, threads: int | None = None,
                    matmul_budget: float = 1.0) -> dict[str, Any]:
    """Interleaved timing of several ``.onnx`` files and of the matmul roof, in this process.

    After one warm-up call per file, each round runs every file once (order reversed every other round, so
    no file always follows the same one) and measures :func:`matmul_macs_per_second` for ``matmul_budget``
    seconds. Returns ``{"seconds": {path: [per-round seconds]}, "macs_per_second": [per-round rate],
    "batch": {path: batch size}}``; report medians, as noise on a shared machine is large.
    """
    ort = _import("onnxruntime")
    if rounds < 1:
        raise ValueError(f"rounds: expected >= 1, got {rounds}")
    runs = {}
    for path in paths:
        session = ort.InferenceSession(str(path), _session_options(ort, threads), providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        batch = np.random.default_rng(0).standard_normal(_shape_of(inp.shape)).astype(np.float32)
        session.run(None, {inp.name: batch})
        runs[str(path)] = (session, inp.name, batch)
    seconds: dict[str, list[float]] = {p: [] for p in runs}
    rates: list[float] = []
    for r in range(rounds):
        rates.append(matmul_macs_per_second(matmul_budget, threads=threads))
        for path in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            session, name, batch = runs[path]
            seconds[path].append(timed_call(session.run, None, {name: batch})[1])
    return {"seconds": seconds, "macs_per_second": rates, "batch": {p: runs[p][2].shape[0] for p in runs}}
