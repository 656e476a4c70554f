"""ONNX graph rewrite for onnxruntime (src/deploy/onnx_graph.py), checked on real exports."""
import collections

import mindspore as ms
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

# pylint: disable=wrong-import-position
from onnx import TensorProto, numpy_helper  # noqa: E402

from src.deploy import export_model  # noqa: E402
from src.deploy.onnx_graph import GraphRewriteError, rewrite_for_onnxruntime  # noqa: E402
from src.deploy.onnx_runtime import OnnxPredictor, read_onnx_meta  # noqa: E402
from src.models import PPTStats, create_model  # noqa: E402

ARCH = dict(num_classes=10, img_size=32, patch_size=8, embed_dim=48, num_heads=3)
PPT = {"r": 4, "layers": [1, 2], "threshold": 1e-4, "prop_attn": True}
INFO = {"img_size": 32, "crop_pct": 0.875, "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25], "data_path": "demo"}
POLYNOMIAL_OPS = {"Abs", "Exp", "Neg", "Not", "ReduceSumSquare"}  # only the erf-free GELU / LayerNorm use them
PPT_OPS = ("TopK", "Gather", "GatherElements", "Log", "ArgMax", "ReduceMax", "Equal", "Concat", "MatMul")
BATCH = 8


def _ops(path):
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _mixed_ppt_models():
    """Two copies (same weights) of a tiny PPT DeiT whose threshold splits the test batch at the first PP
    block: some images are pooled, the others pruned (the threshold is the median score variance there).
    Two copies: MindSpore 2.10's ONNX exporter fails on a second ONNX export of the same Cell object."""
    models = [create_model("deit_tiny_patch16_224", depth=4, ppt=dict(PPT), **ARCH) for _ in range(2)]
    ms.load_param_into_net(models[1], models[0].parameters_dict(), strict_load=True)
    x = np.random.default_rng(1).standard_normal((BATCH, 3, 32, 32)).astype(np.float32)
    models[0].set_train(False)
    svar = PPTStats(models[0])(ms.Tensor(x))[2].asnumpy()
    threshold = float(np.median(svar[:, 0]))
    for model in models:
        model.set_train(False)
        for block in model.blocks:
            if block.reduces:
                block.reducer.threshold = threshold
    pooled = PPTStats(models[1])(ms.Tensor(x))[1].asnumpy()
    assert 0 < pooled[:, 0].sum() < BATCH, "the test batch must mix pooled and pruned images"
    return models, x


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """PPT model exported with and without the rewrite, and a plain model with it (batch 8, 32 px).

    In PyNative: the exporter compiles its own graph in either mode, and the Cells' reference logits need no
    compile of their own (three, ~13 s); graph-mode Cells against their ONNX exports are
    tests/unit/test_onnx_runtime.py's and test_deit3.py's."""
    folder = tmp_path_factory.mktemp("onnx")
    (ppt, ppt_copy), x = _mixed_ppt_models()
    plain = create_model("deit_tiny_patch16_224", depth=2, **ARCH)
    plain.set_train(False)
    out = {
        "ppt": (ppt, export_model(ppt, folder / "ppt", "ONNX", BATCH, data_info=INFO)),
        "ppt_raw": (ppt_copy, export_model(ppt_copy, folder / "ppt_raw", "ONNX", BATCH, onnx_rewrite=False)),
        "plain": (plain, export_model(plain, folder / "plain", "ONNX", BATCH)),
    }
    expected = {k: model(ms.Tensor(x)).asnumpy() for k, (model, _) in out.items()}
    return out, x, expected


def test_rewritten_graph_has_fusable_ops_and_no_polynomial(exports):
    out, _, _ = exports
    for key, depth in (("ppt", 4), ("plain", 2)):
        ops = _ops(out[key][1].path)
        assert ops["Erf"] == depth and ops["LayerNormalization"] == 2 * depth + 1, key
        assert not POLYNOMIAL_OPS & set(ops), key
        assert "rewritten for onnxruntime" in out[key][1].note
    # MindSpore's own graph has the polynomial and primitive LayerNorms; the PPT nodes are left as they were.
    raw, new = _ops(out["ppt_raw"][1].path), _ops(out["ppt"][1].path)
    assert raw["Exp"] == 4 and raw["ReduceSumSquare"] == 9 and raw["Erf"] == 0
    assert {op: new[op] for op in PPT_OPS} == {op: raw[op] for op in PPT_OPS}
    assert new["Where"] == raw["Where"] - 4  # only the GELUs' Where went
    assert onnx.load(str(out["ppt"][1].path)).opset_import[0].version == 17


def test_rewritten_logits_match_the_cell(exports):
    out, x, expected = exports
    for key in ("ppt", "plain", "ppt_raw"):
        got = OnnxPredictor(out[key][1].path)(x)
        np.testing.assert_allclose(got, expected[key], atol=1e-4, rtol=0, err_msg=key)
    # Erf is exact GELU: the rewritten graph is at least as close to the Cell as the polynomial one.
    ppt = np.abs(OnnxPredictor(out["ppt"][1].path)(x) - expected["ppt"]).max()
    assert ppt <= 1e-5


def test_metadata_round_trips(exports):
    out, _, _ = exports
    meta = read_onnx_meta(out["ppt"][1].path)
    assert meta.input_shape == (BATCH, 3, 32, 32) and meta.output_shape == (BATCH, 10)
    assert meta.info == INFO
    predictor = OnnxPredictor(out["ppt"][1].path, threads=1)
    assert (predictor.batch_size, predictor.num_classes, predictor.info) == (BATCH, 10, INFO)
    assert predictor.input_shape == (BATCH, 3, 32, 32) and predictor.path == out["ppt"][1].path
    assert read_onnx_meta(out["plain"][1].path).info is None  # exported without data_info


def test_unmatched_pattern_fails_in_one_line(exports):
    out, _, _ = exports
    raw = onnx.load(str(out["ppt_raw"][1].path))
    counts = {"expect_gelu": 4, "expect_layernorm": 9}
    _, report = rewrite_for_onnxruntime(raw, **counts)  # the untouched export matches
    assert (report.gelu, report.layernorm, report.opset) == (4, 9, 17)
    with pytest.raises(GraphRewriteError, match=r"^ONNX rewrite: expected 5 erf-free GELU subgraphs, found 4$"):
        rewrite_for_onnxruntime(raw, expect_gelu=5, expect_layernorm=9)
    # One GELU's polynomial with a wrong coefficient: that GELU is reported, nothing is rewritten.
    broken = onnx.load(str(out["ppt_raw"][1].path))
    inits = {i.name: i for i in broken.graph.initializer}
    name = next(n for n, i in inits.items() if i.dims == [] and i.data_type == TensorProto.FLOAT
                and abs(float(numpy_helper.to_array(i)) - 1.4214138) < 1e-6)
    inits[name].CopyFrom(numpy_helper.from_array(np.array(1.5, np.float32), name))
    before = broken.SerializeToString()
    with pytest.raises(GraphRewriteError, match=r"expected 4 erf-free GELU subgraphs, found \d; first mismatch: "
                                                r"Exp node .*polynomial coefficients") as e:
        rewrite_for_onnxruntime(broken, **counts)
    assert "\n" not in str(e.value)
    assert broken.SerializeToString() == before
    with pytest.raises(GraphRewriteError, match="erf-free GELU pattern not found"):
        rewrite_for_onnxruntime(broken)  # no expected counts: every anchor must match
