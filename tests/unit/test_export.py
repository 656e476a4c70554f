"""Export (src/deploy/export.py): what every format shares -- the written file computes what the Cell computes,
or is not written. Each runtime's own export is tested with it (tests/unit/test_mindir.py, test_onnx_runtime.py,
test_runtime.py)."""
import pytest

from src.deploy import ExportError, VerificationError, export_model
from src.deploy.export import check_format_device, output_path
from src.deploy.mindir import MindIRRuntime
from src.deploy.onnx_runtime import OnnxRuntimeMissing
from src.models import create_model


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


def test_air_is_refused_off_ascend(tmp_path):
    with pytest.raises(ExportError, match="AIR.*Ascend.*got CPU"):
        check_format_device("AIR", "CPU")
    # The library call checks the actual context too, before any work.
    with pytest.raises(ExportError, match="AIR export needs an Ascend device"):
        export_model(_small(), tmp_path / "m", "AIR")
    assert not list(tmp_path.iterdir())


def test_unknown_format_and_bad_batch_size(tmp_path):
    with pytest.raises(ExportError, match="file_format: expected one of CKPT, MINDIR, AIR, ONNX(, .*)?, got 'TFLITE'"):
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
    real_run = MindIRRuntime.run_written
    monkeypatch.setattr(MindIRRuntime, "run_written", lambda *a: real_run(*a) + 1e-3)
    with pytest.raises(VerificationError, match=r"MindIR file disagrees with the model: max abs logit difference 0.001 "
                                                r"> 0.0001"):
        export_model(_small(), tmp_path / "m", "MINDIR", 2)
    # The failed file is gone, no temporary file is left, and the previous file is untouched.
    assert [p.name for p in tmp_path.iterdir()] == ["m.mindir"]
    assert target.read_bytes() == b"previous export"


@pytest.mark.skipif(_onnx_available(), reason="onnx and onnxruntime are installed: the export is verified instead")
def test_onnx_without_its_packages_is_refused(tmp_path):
    with pytest.raises(OnnxRuntimeMissing, match="needs the optional package onnx"):
        check_format_device("ONNX", "CPU")
    with pytest.raises(OnnxRuntimeMissing, match="pip install -r requirements-onnx.txt"):
        export_model(_small(), tmp_path / "m", "ONNX")
    assert not list(tmp_path.iterdir())
