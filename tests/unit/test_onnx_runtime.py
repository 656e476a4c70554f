"""The ONNX runtime (src/deploy/onnx_runtime.py): MindSpore's export repaired (erf-free GELU, Sort->TopK), files
run and read with onnxruntime / onnx, the matmul roof. The graph rewrite is tests/unit/test_onnx_graph.py's."""
import math
import sys

import mindspore as ms
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

# pylint: disable=wrong-import-position
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import src.deploy.onnx_runtime as onnx_runtime_mod  # noqa: E402
from src.deploy import ExportError, Preprocess, VerificationError, export_model  # noqa: E402
from src.deploy.onnx_graph import expected_patterns  # noqa: E402
from src.deploy.onnx_runtime import (  # noqa: E402
    ErfFreeGELU,
    OnnxPredictor,
    OnnxRuntime,
    OnnxRuntimeMissing,
    mac_utilisation,
    matmul_macs_per_second,
    read_onnx_meta,
)
from src.models import create_model  # noqa: E402

ARCH = dict(num_classes=10, img_size=32, patch_size=8, embed_dim=48, num_heads=3)
PRE = Preprocess(32, 0.875, "bicubic", (0.5,) * 3, (0.5,) * 3, "/data", tuple(f"shape{i}" for i in range(10)))


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    """A tiny DeiT with one pool-all PP block (the Sort path of the matching) exported to ONNX, batch 2."""
    model = create_model("deit_tiny_patch16_224", depth=3, ppt=dict(r=4, layers=[1], threshold=1e9, prop_attn=True),
                         **ARCH)
    model.set_train(False)
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        yield model, export_model(model, tmp_path_factory.mktemp("onnx") / "m", "ONNX", 2, data_info=PRE.to_dict())
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def test_erf_free_gelu_matches_exact_gelu():
    x = np.linspace(-12, 12, 100001, dtype=np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    approx = ErfFreeGELU()(ms.Tensor(x)).asnumpy()
    assert np.abs(approx - exact).max() < 1e-6


def test_onnx_export_with_pp_block_is_verified(small_onnx):
    model, result = small_onnx
    assert result.path.name == "m.onnx" and result.max_abs_diff < 1e-4
    # The class names sit in the same metadata as the preprocessing settings, as in a MindIR.
    assert Preprocess.from_dict(read_onnx_meta(result.path).info, str(result.path)) == PRE
    graph = onnx.load(str(result.path)).graph
    names = [init.name for init in graph.initializer]
    assert len(names) == len(set(names))  # the clashing Sort->TopK "k" initializers were replaced
    ops = {node.op_type for node in graph.node}
    assert "Erf" in ops and "Exp" not in ops  # the rewrite put exact GELU back (tests/unit/test_onnx_graph.py)
    # The model Cell still has its exact GELU after the export-only swap.
    assert all(not isinstance(c, ErfFreeGELU) for _, c in model.cells_and_names())


def test_foreign_onnx_reads_as_info_none(tmp_path):
    weight = numpy_helper.from_array(np.full((48, 5), 0.01, np.float32), "w")
    shape = numpy_helper.from_array(np.array([2, 48], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["image", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["y"])],
        "foreign", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])], [weight, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "foreign.onnx"))
    meta = read_onnx_meta(tmp_path / "foreign.onnx")
    assert (meta.input_shape, meta.output_shape, meta.info) == ((2, 3, 4, 4), (2, 5), None)
    predictor = OnnxPredictor(tmp_path / "foreign.onnx")
    assert predictor.info is None
    np.testing.assert_allclose(predictor(np.ones((2, 3, 4, 4), np.float32)), np.full((2, 5), 0.48), rtol=1e-5)




def test_predictor_rejects_a_wrong_shape_in_one_line(small_onnx):
    predictor = OnnxPredictor(small_onnx[1].path)
    x = np.zeros((2, 3, 32, 32), np.float32)
    for bad in (x[:1], x.astype(np.float64), np.ascontiguousarray(x[:, :, :16, :16])):
        with pytest.raises(ValueError, match=r"takes float32 input \[2, 3, 32, 32\] \(batch 2, 32x32 px\), got") as e:
            predictor(bad)
        assert "\n" not in str(e.value)




def test_missing_onnxruntime_names_the_install_command(small_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # "import onnxruntime" now raises ImportError
    with pytest.raises(OnnxRuntimeMissing, match=r"onnxruntime: pip install -r requirements-onnx.txt$"):
        OnnxPredictor(small_onnx[1].path)




def test_export_with_an_unmatched_pattern_leaves_no_file(tmp_path, monkeypatch, graph_mode):
    model = create_model("deit_tiny_patch16_224", depth=1, **ARCH)
    assert expected_patterns(model) == {"gelu": 1, "layernorm": 3}
    monkeypatch.setattr(onnx_runtime_mod, "expected_patterns", lambda m: {"gelu": 2, "layernorm": 3})
    with pytest.raises(ExportError, match=r"^ONNX rewrite: expected 2 erf-free GELU subgraphs, found 1$") as e:
        export_model(model, tmp_path / "m", "ONNX", 1)
    assert "\n" not in str(e.value)
    assert not list(tmp_path.iterdir())
    assert ErfFreeGELU not in {type(c) for _, c in model.cells_and_names()}
    # A rewritten file that disagrees with the Cell is removed as before (verification runs after the rewrite).
    monkeypatch.undo()
    real_run = OnnxRuntime.run_written
    monkeypatch.setattr(OnnxRuntime, "run_written", lambda *a: real_run(*a) + 1e-3)
    copy = create_model("deit_tiny_patch16_224", depth=1, **ARCH)  # a fresh Cell: MindSpore exports a Cell once
    with pytest.raises(VerificationError, match="disagrees with the model"):
        export_model(copy, tmp_path / "m", "ONNX", 1)
    assert not list(tmp_path.iterdir())




def test_matmul_rate_and_utilisation():
    rate = matmul_macs_per_second(0.05, size=(64, 64, 64), threads=1)
    assert np.isfinite(rate) and rate > 1e6
    assert mac_utilisation(10.0, 3e9, 60e9) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="expected positive size"):
        matmul_macs_per_second(0.05, size=(0, 64, 64))
