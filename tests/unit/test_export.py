"""Export (src/export.py, export.py): the written file computes what the Cell computes, or is not written."""
import math

import mindspore as ms
import numpy as np
import pytest

import src.export as export_mod
from src.export import (
    ErfFreeGELU,
    ExportError,
    VerificationError,
    check_format_device,
    export_model,
    output_path,
    read_mindir_meta,
)
from src.inference import MindIRPredictor, Preprocess
from src.models import create_model

from ..conftest import make_mini

MIXED = dict(r=50, layers=[3, 6, 9], threshold=3.9924709317941296e-05, prop_attn=True)


def _onnx_available() -> bool:
    try:
        import onnx  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        import onnxruntime  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        return False
    return True


def _small(threshold=1e9):
    """A tiny random DeiT with one PP block (pool-all by default: the Sort path of the matching is used)."""
    model = create_model("deit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8, embed_dim=48,
                         depth=3, num_heads=3, ppt=dict(r=4, layers=[1], threshold=threshold, prop_attn=True))
    model.set_train(False)
    return model


@pytest.fixture(scope="module")
def mixed_mindir(tmp_path_factory):
    """The golden mini DeiT with the golden "mixed" PPT setting exported to MindIR (batch 8, 112 px)."""
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        model = make_mini(MIXED)
        out = tmp_path_factory.mktemp("export") / "mini"
        result = export_model(model, out, "MINDIR", 8, data_info={"img_size": 112, "crop_pct": 0.875})
        yield model, result
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


def test_erf_free_gelu_matches_exact_gelu():
    x = np.linspace(-12, 12, 100001, dtype=np.float32)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    approx = ErfFreeGELU()(ms.Tensor(x)).asnumpy()
    assert np.abs(approx - exact).max() < 1e-6


def test_mixed_ppt_batch_exports_to_mindir(mixed_mindir, golden, golden_input, graph_mode):
    model, result = mixed_mindir
    _, ref = golden
    # The golden input really mixes pruned and pooled images at the first PP block.
    assert 0 < ref["mixed/pooled_layer3"].sum() < 8
    assert result.path.name == "mini.mindir" and result.path.is_file()
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    assert result.size_bytes == result.path.stat().st_size
    assert [p.name for p in result.path.parent.iterdir()] == ["mini.mindir"]  # no temporary files left
    meta = read_mindir_meta(result.path)
    assert meta.input_shape == (8, 3, 112, 112) and meta.output_shape == (8, 10)
    assert meta.info == {"img_size": 112, "crop_pct": 0.875}

    predictor = MindIRPredictor(result.path)
    got = predictor(golden_input)
    np.testing.assert_allclose(got, model(ms.Tensor(golden_input)).asnumpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got, ref["mixed/logits"], atol=1e-4, rtol=0)


def test_mindir_rejects_wrong_batch_and_image_size(mixed_mindir, golden_input):
    predictor = MindIRPredictor(mixed_mindir[1].path)
    with pytest.raises(ValueError, match=r"takes float32 input \[8, 3, 112, 112\].*got float32 \[4, 3, 112, 112\]"):
        predictor(golden_input[:4])
    with pytest.raises(ValueError, match=r"batch 8, 112x112 px.*\[8, 3, 96, 96\]"):
        predictor(np.ascontiguousarray(golden_input[:, :, :96, :96]))
    with pytest.raises(ValueError, match="float64"):
        predictor(golden_input.astype(np.float64))


def test_air_is_refused_off_ascend(tmp_path):
    with pytest.raises(ExportError, match="AIR.*Ascend.*got CPU"):
        check_format_device("AIR", "CPU")
    # The library call checks the actual context too, before any work.
    with pytest.raises(ExportError, match="AIR export needs an Ascend device"):
        export_model(_small(), tmp_path / "m", "AIR")
    assert not list(tmp_path.iterdir())


def test_unknown_format_and_bad_batch_size(tmp_path):
    with pytest.raises(ExportError, match="file_format: expected one of MINDIR, AIR, ONNX, got 'TFLITE'"):
        export_model(_small(), tmp_path / "m", "TFLITE")
    with pytest.raises(ExportError, match="batch_size: expected an int >= 1, got 0"):
        export_model(_small(), tmp_path / "m", "MINDIR", 0)


def test_output_path_adds_the_extension_once():
    assert output_path("out/m", "mindir").name == "m.mindir"
    assert output_path("out/m.mindir", "MINDIR").name == "m.mindir"
    assert output_path("m.v2", "ONNX").name == "m.v2.onnx"


def test_disagreeing_export_is_removed(tmp_path, monkeypatch, graph_mode):
    target = tmp_path / "m.mindir"
    target.write_bytes(b"previous export")
    real_run = export_mod._run_exported
    monkeypatch.setattr(export_mod, "_run_exported", lambda *a: real_run(*a) + 1e-3)
    with pytest.raises(VerificationError, match=r"disagrees with the model: max abs logit difference 0.001 > 0.0001"):
        export_model(_small(), tmp_path / "m", "MINDIR", 2)
    # The failed file is gone, no temporary file is left, and the previous file is untouched.
    assert [p.name for p in tmp_path.iterdir()] == ["m.mindir"]
    assert target.read_bytes() == b"previous export"


@pytest.mark.skipif(_onnx_available(), reason="onnx and onnxruntime are installed: the export is verified instead")
def test_onnx_without_its_packages_is_refused(tmp_path):
    with pytest.raises(ExportError, match="ONNX export needs the optional packages onnx and onnxruntime"):
        check_format_device("ONNX", "CPU")
    with pytest.raises(ExportError, match="pip install onnx onnxruntime"):
        export_model(_small(), tmp_path / "m", "ONNX")
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not _onnx_available(), reason="needs the optional packages onnx and onnxruntime")
def test_onnx_export_with_pp_block_is_verified(tmp_path, graph_mode):
    import onnx  # pylint: disable=import-outside-toplevel

    from src.onnx_runtime import read_onnx_meta  # pylint: disable=import-outside-toplevel

    model = _small()
    pre = Preprocess(32, 0.875, "bicubic", (0.5,) * 3, (0.5,) * 3, "/data", tuple(f"shape{i}" for i in range(10)))
    result = export_model(model, tmp_path / "m", "ONNX", 2, data_info=pre.to_dict())
    assert result.path.name == "m.onnx" and result.max_abs_diff < 1e-4
    # The class names sit in the same metadata as the preprocessing settings, as in a MindIR.
    assert Preprocess.from_dict(read_onnx_meta(result.path).info, str(result.path)) == pre
    graph = onnx.load(str(result.path)).graph
    names = [init.name for init in graph.initializer]
    assert len(names) == len(set(names))  # the clashing Sort->TopK "k" initializers were replaced
    ops = {node.op_type for node in graph.node}
    assert "Erf" in ops and "Exp" not in ops  # src.onnx_graph put exact GELU back (tests/test_onnx_graph.py)
    # The model Cell still has its exact GELU after the export-only swap.
    assert all(not isinstance(c, ErfFreeGELU) for _, c in model.cells_and_names())
