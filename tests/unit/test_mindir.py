"""MindIR (src/deploy/mindir.py): the golden mixed PPT batch through an exported MindIR, what the file says about
itself, and its fixed input shape."""
import mindspore as ms
import numpy as np
import pytest

from src.deploy import export_model
from src.deploy.mindir import MindIRPredictor, read_mindir_meta
from src.token_reduction import PPTSetting

MIXED = dict(r=50, layers=[3, 6, 9], threshold=3.9924709317941296e-05, prop_attn=True)


@pytest.fixture(scope="module")
def mixed_mindir(tmp_path_factory, golden_mixed_model):
    """The golden mini DeiT with the golden "mixed" PPT setting exported to MindIR (batch 8, 112 px). The model
    is the session's (the lean path compiled once: the export runs it on a batch of the golden input's shape)."""
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        model = golden_mixed_model
        assert model.ppt == PPTSetting(**MIXED)
        out = tmp_path_factory.mktemp("export") / "mini"
        result = export_model(model, out, "MINDIR", 8, data_info={"img_size": 112, "crop_pct": 0.875})
        yield model, result
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)


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
