"""Rewrite MindSpore's ONNX export of a (PPT-)DeiT into a graph that onnxruntime can fuse.

MindSpore 2.10 writes an opset-11 graph in which exact GELU is the erf-free Abramowitz-Stegun polynomial of
:class:`src.deploy.onnx_runtime.ErfFreeGELU` (~25 elementwise nodes, among them a ``Where`` over the whole MLP
activation) and every LayerNorm is spelt out as ``ReduceMean, Sub, ReduceSumSquare, Div, Add, Sqrt, Div, Mul, Add``.
onnxruntime recognises neither, so it runs them node by node. :func:`rewrite_for_onnxruntime`:

1. converts the graph to opset 17 (``onnx.version_converter``), the first opset with ``LayerNormalization``;
2. replaces each erf-free GELU subgraph by ``x * (1 + Erf(x / sqrt 2)) * 0.5`` (written as PyTorch writes it,
   the form that onnxruntime's GeluFusion turns into its Gelu kernel);
3. replaces each LayerNorm subgraph by one ``LayerNormalization`` (axis -1, the same epsilon, scale, bias);
4. drops Casts to the type their input already has (MindSpore casts every LayerNorm input to float32), so
   the residual ``Add`` feeds the ``LayerNormalization`` directly, as in PyTorch's exports;
5. removes what is left unused (the polynomial's nodes, and the ``[B, N, 4C]`` all-ones tensors it divided,
   which were stored in the file).

Patterns are identified structurally, never by node name: every ``Exp`` node is the anchor of one GELU
(``exp(-z*z)`` with ``z = |x| / sqrt 2``) and every ``ReduceSumSquare`` of one LayerNorm; from the anchor the
matcher walks the whole subgraph, checking each operator, each constant (the polynomial's coefficients,
1/sqrt 2, 0.5, the reduce size and axes) and that every path starts from the same input ``x``. With the
counts the Cell says the graph must hold (:func:`expected_patterns`), a different number of matches is an
error; without them, every anchor must match. A failure raises :class:`GraphRewriteError` (one line) and
leaves the model unchanged: all matching happens before the first edit.
Nothing else is touched: PPT's TopK, Gather/GatherElements, Where, the one-hot merge matmul and the Log of
proportional attention are left as MindSpore wrote them.
"""
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..mslog import first_line
from .meta import PREPROCESS_KEY

__all__ = ["GraphRewriteError", "RewriteReport", "TARGET_OPSET", "REWRITE_KEY", "ERFC_P", "ERFC_COEFFS", "INV_SQRT2",
           "expected_patterns", "rewrite_for_onnxruntime", "set_metadata", "finish_onnx_file"]

TARGET_OPSET = 17  # LayerNormalization is an ONNX operator from opset 17 on
REWRITE_KEY = "ppt_onnx_rewrite"  # metadata_props key of the JSON rewrite report

# Abramowitz & Stegun 7.1.26, as ErfFreeGELU computes it and the rewrite recognises it:
# erfc(z) ~= t * P(t) * exp(-z^2), t = 1 / (1 + p z); P's coefficients, outermost first.
ERFC_P = 0.3275911
ERFC_COEFFS = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
INV_SQRT2 = 0.7071067811865476


class GraphRewriteError(ValueError):
    """An expected subgraph was not found (or found a different number of times); the model is unchanged."""


@dataclass(frozen=True)
class RewriteReport:
    """What :func:`rewrite_for_onnxruntime` did."""
    opset_before: int
    opset: int
    gelu: int
    layernorm: int
    casts_removed: int
    nodes_before: int
    nodes_after: int

    def summary(self) -> str:
        return (f"opset {self.opset_before}->{self.opset}, {self.gelu} GELU -> Erf, {self.layernorm} LayerNorm -> "
                f"LayerNormalization, {self.nodes_before} -> {self.nodes_after} nodes")


def expected_patterns(model: Any) -> dict[str, int]:
    """How many GELU and LayerNorm subgraphs the ONNX export of the Cell ``model`` must contain.

    GELU: every exact ``nn.GELU`` (the export swaps each for an ErfFreeGELU). LayerNorm: every
    ``ops.LayerNorm`` primitive held by a cell (each is called once per forward in these models).
    """
    from mindspore import nn, ops  # pylint: disable=import-outside-toplevel

    gelu = layernorm = 0
    for _, cell in model.cells_and_names():
        if isinstance(cell, nn.GELU) and cell.approximate == "none":
            gelu += 1
        if cell.__class__.__name__ == "ErfFreeGELU":
            gelu += 1
        layernorm += sum(isinstance(p, ops.LayerNorm) for p in getattr(cell, "_primitives", {}).values())
    return {"gelu": gelu, "layernorm": layernorm}


def set_metadata(model: Any, entries: Mapping[str, Any]) -> None:
    """Store each entry as JSON in ``model.metadata_props`` (replacing an entry of the same key)."""
    for key, value in entries.items():
        text = json.dumps(value, sort_keys=True)
        for prop in model.metadata_props:
            if prop.key == key:
                prop.value = text
                break
        else:
            prop = model.metadata_props.add()
            prop.key, prop.value = key, text


def finish_onnx_file(path: str | os.PathLike, *, rewrite: bool = True,
                     expected: Mapping[str, int] | None = None,
                     data_info: Mapping[str, Any] | None = None) -> RewriteReport | None:
    """The ONNX export's last step, in place: :func:`rewrite_for_onnxruntime` (unless ``rewrite`` is False)
    with the ``expected`` counts of :func:`expected_patterns`, then the metadata: ``data_info`` as JSON under
    :data:`PREPROCESS_KEY` and the rewrite report under :data:`REWRITE_KEY`. The file keeps its mode."""
    import onnx  # pylint: disable=import-outside-toplevel

    path = Path(path)
    model = onnx.load(str(path))
    report = None
    if rewrite:
        expected = expected or {}
        model, report = rewrite_for_onnxruntime(model, expect_gelu=expected.get("gelu"),
                                                expect_layernorm=expected.get("layernorm"))
    entries: dict[str, Any] = {}
    if data_info is not None:
        entries[PREPROCESS_KEY] = dict(data_info)
    if report is not None:
        entries[REWRITE_KEY] = asdict(report)
    set_metadata(model, entries)
    mode = path.stat().st_mode & 0o777
    path.chmod(0o600)  # mindspore.export writes its files read-only (0400)
    try:
        onnx.save(model, str(path))
    finally:
        path.chmod(mode)
    return report


def rewrite_for_onnxruntime(model: Any, *, expect_gelu: int | None = None, expect_layernorm: int | None = None,
                            opset: int = TARGET_OPSET) -> tuple[Any, RewriteReport]:
    """Rewrite ``model`` (an ``onnx.ModelProto`` as MindSpore exports it); returns ``(new_model, report)``.

    ``expect_gelu`` / ``expect_layernorm``: how many of each subgraph the graph must hold (see
    :func:`expected_patterns`); None = every anchor must match. Raises :class:`GraphRewriteError`.
    """
    import onnx  # pylint: disable=import-outside-toplevel
    from onnx import version_converter  # pylint: disable=import-outside-toplevel

    opset_before = _default_opset(model)
    nodes_before = len(model.graph.node)
    if opset_before < opset:
        try:
            model = version_converter.convert_version(model, opset)
        except Exception as e:  # the converter raises plain RuntimeError/ValueError subclasses of its own
            raise GraphRewriteError(f"ONNX rewrite: cannot convert opset {opset_before} to {opset}: "
                                    f"{first_line(e)}") from None
    model = onnx.shape_inference.infer_shapes(model)
    graph = _Graph(model)

    gelus = _match_all(graph, "Exp", _match_gelu, "erf-free GELU", expect_gelu)
    norms = _match_all(graph, "ReduceSumSquare", _match_layernorm, "LayerNorm", expect_layernorm)

    for m in gelus:
        graph.replace(m["out_node"], _gelu_nodes(graph, m))
    for m in norms:
        graph.replace(m["out_node"], [_layernorm_node(m)])
    casts = graph.remove_noop_casts()
    graph.prune()
    graph.commit()
    del model.graph.value_info[:]  # stale after the rewrite; shapes are static and re-inferred by any runtime
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # onnx.checker.ValidationError and friends
        raise GraphRewriteError(f"ONNX rewrite: the rewritten graph is not valid ONNX: {first_line(e)}") from None
    report = RewriteReport(opset_before, _default_opset(model), len(gelus), len(norms), casts, nodes_before,
                           len(model.graph.node))
    return model, report


# --------------------------------------------------------------------------------------------- internals

class _NoMatch(Exception):
    """The subgraph at an anchor is not the expected pattern (the message says where it differs)."""


class _Graph:
    """Index of an ONNX graph: producers, consumers, constants, inferred types and shapes; edits are staged
    (``replace``/``remove_noop_casts``/``prune``) and written back with ``commit``."""

    def __init__(self, model: Any):
        from onnx import numpy_helper  # pylint: disable=import-outside-toplevel

        self.model = model
        self.g = model.graph
        self.nodes: list[Any] = list(self.g.node)
        self.inits = {i.name: i for i in self.g.initializer}
        self._np = numpy_helper
        self._const_cache: dict[str, np.ndarray | None] = {}
        self.types: dict[str, tuple[int, tuple[int, ...] | None]] = {}
        for vi in list(self.g.input) + list(self.g.value_info) + list(self.g.output):
            tt = vi.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim) \
                if tt.HasField("shape") else None
            self.types[vi.name] = (tt.elem_type, dims)
        for init in self.g.initializer:
            self.types[init.name] = (init.data_type, tuple(init.dims))
        self.new_inits: dict[str, Any] = {}
        self.reindex()

    def reindex(self) -> None:
        self.producer = {}
        self.consumers: dict[str, list[Any]] = {}
        for node in self.nodes:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)
        self.graph_outputs = {o.name for o in self.g.output}

    # ---- queries
    def op(self, name: str, op_type: str, what: str) -> Any:
        node = self.producer.get(name)
        if node is None or node.op_type != op_type:
            got = "a graph input or initializer" if node is None else node.op_type
            raise _NoMatch(f"{what} should be {op_type}, is {got}")
        return node

    def const(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is a constant (initializer, Constant, or Cast/Identity of one)."""
        if name in self._const_cache:
            return self._const_cache[name]
        value = None
        if name in self.inits:
            value = self._np.to_array(self.inits[name])
        elif name in self.producer:
            node = self.producer[name]
            if node.op_type == "Constant":
                attr = next((a for a in node.attribute if a.name == "value"), None)
                if attr is not None:
                    value = self._np.to_array(attr.t)
            elif node.op_type in ("Cast", "Identity") and node.input[0]:
                src = self.const(node.input[0])
                if src is not None and node.op_type == "Cast":
                    import onnx  # pylint: disable=import-outside-toplevel
                    to = next(a.i for a in node.attribute if a.name == "to")
                    value = src.astype(onnx.helper.tensor_dtype_to_np_dtype(to))
                else:
                    value = src
        self._const_cache[name] = value
        return value

    def scalar(self, name: str) -> float | None:
        """``name``'s value if it is a constant whose elements are all equal (a broadcast scalar)."""
        value = self.const(name)
        if value is None or value.size == 0 or value.dtype.kind != "f":
            return None
        first = value.reshape(-1)[0]
        return float(first) if np.all(value == first) else None

    def split_const(self, node: Any, what: str) -> tuple[str, float]:
        """(variable input, scalar constant) of a binary commutative node with exactly one constant input."""
        a, b = node.input
        ca, cb = self.scalar(a), self.scalar(b)
        if (ca is None) == (cb is None):
            raise _NoMatch(f"{what} ({node.op_type}) should have one scalar-constant input")
        return (b, ca) if ca is not None else (a, cb)

    def only_consumer(self, name: str, op_type: str, what: str) -> Any:
        users = self.consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != op_type:
            raise _NoMatch(f"{what} should feed one {op_type}, feeds {[u.op_type for u in users]}")
        return users[0]

    def attr(self, node: Any, name: str, default: Any = None) -> Any:
        from onnx import helper  # pylint: disable=import-outside-toplevel

        a = next((a for a in node.attribute if a.name == name), None)
        return default if a is None else helper.get_attribute_value(a)

    def reduce_axes(self, node: Any) -> list[int] | None:
        axes = self.attr(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            value = self.const(node.input[1])
            axes = None if value is None else value.reshape(-1).tolist()
        return None if axes is None else [int(a) for a in axes]

    def shape(self, name: str) -> tuple[int, ...] | None:
        entry = self.types.get(name)
        return None if entry is None else entry[1]

    # ---- edits
    def initializer(self, name: str, value: np.ndarray) -> str:
        if name not in self.inits and name not in self.new_inits:
            self.new_inits[name] = self._np.from_array(np.asarray(value), name)
        return name

    def replace(self, old: Any, new_nodes: Sequence[Any]) -> None:
        """Put ``new_nodes`` where ``old`` is (the last of them takes over ``old``'s outputs)."""
        i = next(k for k, n in enumerate(self.nodes) if n is old)
        self.nodes[i:i + 1] = list(new_nodes)

    def remove_noop_casts(self) -> int:
        """Bypass every Cast whose input already has the target type; returns how many."""
        self.reindex()
        removed = 0
        for node in list(self.nodes):
            if node.op_type != "Cast" or node.output[0] in self.graph_outputs:
                continue
            src_type = self.types.get(node.input[0], (None, None))[0]
            if src_type is None or src_type != self.attr(node, "to"):
                continue
            for user in self.consumers.get(node.output[0], []):
                for k, inp in enumerate(user.input):
                    if inp == node.output[0]:
                        user.input[k] = node.input[0]
            self.nodes.remove(node)
            removed += 1
        return removed

    def prune(self) -> None:
        """Drop nodes whose outputs nobody uses (repeatedly), then unused initializers."""
        while True:
            self.reindex()
            keep = [n for n in self.nodes
                    if any(o in self.graph_outputs or self.consumers.get(o) for o in n.output)]
            if len(keep) == len(self.nodes):
                break
            self.nodes = keep

    def commit(self) -> None:
        self.reindex()
        used = set(self.consumers) | self.graph_outputs
        inits = [i for i in self.g.initializer if i.name in used]
        inits += [i for name, i in self.new_inits.items() if name in used]
        del self.g.initializer[:]
        self.g.initializer.extend(inits)
        inputs = [i for i in self.g.input if i.name in used or i.name not in self.inits]
        del self.g.input[:]
        self.g.input.extend(inputs)
        del self.g.node[:]
        self.g.node.extend(self.nodes)


def _match_all(graph: _Graph, anchor_op: str, matcher, what: str, expected: int | None) -> list[dict[str, Any]]:
    anchors = [n for n in graph.nodes if n.op_type == anchor_op]
    matches, misses = [], []
    for node in anchors:
        try:
            matches.append(matcher(graph, node))
        except _NoMatch as e:
            misses.append(f"{anchor_op} node {node.name!r}: {e}")
    if expected is None:
        if misses or not matches:
            why = misses[0] if misses else f"no {anchor_op} node in the graph"
            raise GraphRewriteError(f"ONNX rewrite: {what} pattern not found ({why})")
    elif len(matches) != expected:
        why = f"; first mismatch: {misses[0]}" if misses else ""
        raise GraphRewriteError(f"ONNX rewrite: expected {expected} {what} subgraphs, found {len(matches)}{why}")
    return matches


def _close(value: float | None, target: float, rtol: float = 1e-6) -> bool:
    return value is not None and abs(value - target) <= rtol * abs(target) + 1e-12


def _match_gelu(graph: _Graph, exp: Any) -> dict[str, Any]:
    """ErfFreeGELU, anchored at ``Exp(-z * z)``: returns its input ``x`` and output node."""
    sq = graph.op(exp.input[0], "Mul", "Exp's input")
    neg_side = [k for k, name in enumerate(sq.input) if graph.producer.get(name) is not None
                and graph.producer[name].op_type == "Neg" and graph.producer[name].input[0] == sq.input[1 - k]]
    if not neg_side:
        raise _NoMatch("Exp's input should be Neg(z) * z")
    z = sq.input[1 - neg_side[0]]
    z_node = graph.op(z, "Mul", "z")
    abs_name, c = graph.split_const(z_node, "z")
    if not _close(c, INV_SQRT2):
        raise _NoMatch(f"z should be |x| * {INV_SQRT2:.7g}, is |x| * {c:.7g}")
    x = graph.op(abs_name, "Abs", "z's input").input[0]

    # t = 1 / (1 + p z)
    tail = graph.only_consumer(exp.output[0], "Mul", "Exp")  # half_tail = (0.5 x * poly) * exp
    head_name = tail.input[0] if tail.input[1] == exp.output[0] else tail.input[1]
    head = graph.op(head_name, "Mul", "half_tail's first factor")
    half_x, poly = None, None
    for k in (0, 1):
        p = graph.producer.get(head.input[k])
        if p is not None and p.op_type == "Mul":
            try:
                var, c = graph.split_const(p, "0.5 x")
            except _NoMatch:
                continue
            if var == x and _close(c, 0.5):
                half_x, poly = head.input[k], head.input[1 - k]
    if half_x is None:
        raise _NoMatch("half_tail should be (x * 0.5) * poly * exp")
    t, coeffs = _horner(graph, poly)
    if len(coeffs) != len(ERFC_COEFFS) or not all(_close(a, b) for a, b in zip(coeffs, ERFC_COEFFS)):
        raise _NoMatch(f"polynomial coefficients {coeffs} are not Abramowitz-Stegun 7.1.26's")
    div = graph.op(t, "Div", "t")
    if graph.scalar(div.input[0]) != 1.0:
        raise _NoMatch("t should be 1 / (1 + p z)")
    denom = graph.op(div.input[1], "Add", "t's denominator")
    pz_name, one = graph.split_const(denom, "t's denominator")
    pz = graph.op(pz_name, "Mul", "p z")
    z2, p = graph.split_const(pz, "p z")
    if z2 != z or one != 1.0 or not _close(p, ERFC_P):
        raise _NoMatch("t should be 1 / (1 + 0.3275911 z) of the same z")

    # out = Where(x >= 0, x - half_tail, half_tail)
    users = graph.consumers.get(tail.output[0], [])
    sub = next((u for u in users if u.op_type == "Sub"), None)
    where = next((u for u in users if u.op_type == "Where"), None)
    if len(users) != 2 or sub is None or where is None or list(sub.input) != [x, tail.output[0]]:
        raise _NoMatch("half_tail should feed Sub(x, half_tail) and Where")
    if list(where.input[1:]) != [sub.output[0], tail.output[0]]:
        raise _NoMatch("Where should be Where(x >= 0, x - half_tail, half_tail)")
    _check_nonnegative_test(graph, where.input[0], x)
    return {"x": x, "out_node": where}


def _horner(graph: _Graph, poly: str) -> tuple[str, list[float]]:
    """``poly = t * (a0 + t * (a1 + ... t * a_n))``: returns (t, [a0, ..., a_n])."""
    node = graph.op(poly, "Mul", "poly")
    # t is the factor produced by a Div (1 / (1 + p z)); the other factor holds the rest.
    k = next((k for k in (0, 1) if graph.producer.get(node.input[k]) is not None
              and graph.producer[node.input[k]].op_type == "Div"), None)
    if k is None:
        raise _NoMatch("poly should be t * (...), with t = 1 / (...)")
    t = node.input[k]
    coeffs: list[float] = []
    rest = node.input[1 - k]
    for _ in range(len(ERFC_COEFFS)):
        value = graph.scalar(rest)
        if value is not None:  # innermost: t * a_n
            coeffs.append(value)
            return t, coeffs
        add = graph.op(rest, "Add", "polynomial term")
        inner, a = graph.split_const(add, "polynomial term")
        coeffs.append(a)
        mul = graph.op(inner, "Mul", "polynomial term")
        if t not in mul.input:
            raise _NoMatch("polynomial term should be a + t * (...) with the same t")
        rest = mul.input[1] if mul.input[0] == t else mul.input[0]
    raise _NoMatch("polynomial is longer than Abramowitz-Stegun 7.1.26's")


def _check_nonnegative_test(graph: _Graph, cond: str, x: str) -> None:
    """``cond`` is ``x >= 0``: ``GreaterEqual(x, 0)`` or ``Not(Less(x, 0))``."""
    node = graph.producer.get(cond)
    if node is not None and node.op_type == "GreaterEqual" and node.input[0] == x \
            and graph.scalar(node.input[1]) == 0.0:
        return
    if node is not None and node.op_type == "Not":
        less = graph.producer.get(node.input[0])
        if less is not None and less.op_type == "Less" and less.input[0] == x and graph.scalar(less.input[1]) == 0.0:
            return
    raise _NoMatch("Where's condition should be x >= 0")


def _gelu_nodes(graph: _Graph, m: dict[str, Any]) -> list[Any]:
    """``x * (1 + erf(x / sqrt 2)) * 0.5``, PyTorch's export of exact GELU, ending in ``m``'s output."""
    from onnx import helper  # pylint: disable=import-outside-toplevel

    x, out = m["x"], m["out_node"].output[0]
    sqrt2 = graph.initializer("ppt_gelu/sqrt2", np.array(np.sqrt(2.0), np.float32))
    one = graph.initializer("ppt_gelu/one", np.array(1.0, np.float32))
    half = graph.initializer("ppt_gelu/half", np.array(0.5, np.float32))
    base = f"{out}/gelu"
    return [
        helper.make_node("Div", [x, sqrt2], [f"{base}/div"], name=f"{base}/Div"),
        helper.make_node("Erf", [f"{base}/div"], [f"{base}/erf"], name=f"{base}/Erf"),
        helper.make_node("Add", [f"{base}/erf", one], [f"{base}/add"], name=f"{base}/Add"),
        helper.make_node("Mul", [x, f"{base}/add"], [f"{base}/mul"], name=f"{base}/Mul"),
        helper.make_node("Mul", [f"{base}/mul", half], [out], name=f"{base}/Mul_half"),
    ]


def _match_layernorm(graph: _Graph, sqsum: Any) -> dict[str, Any]:
    """MindSpore's LayerNorm over the last axis, anchored at ``ReduceSumSquare(x - mean(x))``."""
    sub = graph.op(sqsum.input[0], "Sub", "ReduceSumSquare's input")
    centered = sub.output[0]
    mean = graph.op(sub.input[1], "ReduceMean", "the subtracted mean")
    x = sub.input[0]
    if mean.input[0] != x:
        raise _NoMatch("the mean should be of the same x")
    shape = graph.shape(x)
    if shape is None or not shape or shape[-1] < 1:
        raise _NoMatch("the normalised tensor's shape is unknown")
    rank, width = len(shape), shape[-1]
    for node in (mean, sqsum):
        axes = graph.reduce_axes(node)
        if axes is None or [a % rank for a in axes] != [rank - 1] or graph.attr(node, "keepdims", 1) != 1:
            raise _NoMatch(f"{node.op_type} should reduce the last axis keeping it, reduces {axes}")
    var = graph.only_consumer(sqsum.output[0], "Div", "ReduceSumSquare")
    if var.input[0] != sqsum.output[0] or graph.scalar(var.input[1]) != float(width):
        raise _NoMatch(f"the variance should be the sum of squares / {width}")
    add_eps = graph.only_consumer(var.output[0], "Add", "variance")
    _, eps = graph.split_const(add_eps, "variance + eps")
    std = graph.only_consumer(add_eps.output[0], "Sqrt", "variance + eps")
    norm = graph.only_consumer(std.output[0], "Div", "std")
    if list(norm.input) != [centered, std.output[0]]:
        raise _NoMatch("normalised should be (x - mean) / std")
    scale = graph.only_consumer(norm.output[0], "Mul", "normalised")
    gamma = scale.input[1] if scale.input[0] == norm.output[0] else scale.input[0]
    shift = graph.only_consumer(scale.output[0], "Add", "scaled")
    beta = shift.input[1] if shift.input[0] == scale.output[0] else shift.input[0]
    params = []
    for name, what in ((gamma, "scale"), (beta, "bias")):
        value = graph.const(name)
        shape_p = tuple(value.shape) if value is not None else graph.shape(name)
        if shape_p != (width,):
            raise _NoMatch(f"the {what} should have shape [{width}], has {shape_p}")
        if value is not None and name not in graph.inits:  # a Cast/Constant of a weight: store the weight
            name = graph.initializer(f"{shift.output[0]}/{what}", value.astype(np.float32))
        params.append(name)
    if eps is None or not eps > 0:
        raise _NoMatch(f"epsilon should be > 0, is {eps}")
    return {"x": x, "scale": params[0], "bias": params[1], "eps": eps, "out_node": shift}


def _layernorm_node(m: dict[str, Any]) -> Any:
    from onnx import helper  # pylint: disable=import-outside-toplevel

    out = m["out_node"].output[0]
    return helper.make_node("LayerNormalization", [m["x"], m["scale"], m["bias"]], [out],
                            name=f"{out}/LayerNormalization", axis=-1, epsilon=float(m["eps"]))


def _default_opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

