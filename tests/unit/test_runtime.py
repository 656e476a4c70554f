"""Runtimes (src/deploy/runtime.py and the registry in src/deploy/__init__.py): every registered runtime round-trips
a tiny model (export, open, the Cell's logits, its metadata read back), found by name and by suffix; the checks
they share (stored metadata, batch shape, the config's model) are one-line errors."""
import mindspore as ms
import numpy as np
import pytest

from src.config import load_config
from src.deploy import (
    DEFAULT_TOLERANCE,
    ExportError,
    Preprocess,
    check_config_model,
    export_model,
    get_runtime,
    list_runtimes,
    register_runtime,
    runtime_for,
)
from src.deploy.inference import preprocess_from_config
from src.deploy.meta import exported_meta
from src.factory import build_model
from src.io.checkpoint import save_weights

from ..run_scripts import TINY_CONFIG

NAMES = ("ant", "bee", "cat")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny 3-class config of the script tests, its random weights, and the data_info an export stores."""
    folder = tmp_path_factory.mktemp("runtimes")
    config = folder / "tiny.yaml"
    config.write_text(TINY_CONFIG.replace("DATA", "/nonexistent"))
    cfg = load_config(config)
    save_weights(build_model(cfg), folder / "w.ckpt")
    pre = Preprocess(32, 0.875, "bicubic", (0.5,) * 3, (0.25,) * 3, None, NAMES)
    return folder, cfg, pre


def _available(runtime) -> bool:
    try:
        runtime.check_available(ms.get_context("device_target"))
    except (ValueError, ImportError):
        return False
    return True


@pytest.mark.parametrize("name", [r.name for r in list_runtimes()])
def test_every_runtime_round_trips(tiny, name):
    folder, cfg, pre = tiny
    runtime = get_runtime(name)
    if not _available(runtime):
        pytest.skip(f"the {runtime.label} runtime is not available here")
    model = build_model(cfg, str(folder / "w.ckpt"))  # a fresh Cell each: MindSpore exports a Cell once
    result = export_model(model, folder / name, runtime.file_format, 2, data_info=pre.to_dict())
    assert result.path == folder / f"{name}{runtime.suffix}" and runtime_for(result.path) is runtime
    assert result.max_abs_diff is not None and result.max_abs_diff <= DEFAULT_TOLERANCE

    predictor = runtime.open(result.path, cfg=cfg, batch_size=2)
    batch = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(predictor(batch), model(ms.Tensor(batch)).asnumpy(), atol=DEFAULT_TOLERANCE, rtol=0)
    assert (predictor.batch_size, predictor.num_classes, predictor.class_names) == (2, 3, NAMES)
    meta = runtime.read_meta(result.path)
    assert meta.info["class_names"] == list(NAMES)
    if runtime.needs_config:  # weights: the config gives the shapes and the preprocessing
        assert (meta.input_shape, predictor.preprocess) == (None, None)
    else:
        assert meta.input_shape == (2, 3, 32, 32) and meta.output_shape == (2, 3)
        assert predictor.preprocess == pre
        check_config_model(cfg, predictor)


def test_runtimes_by_name_format_and_suffix():
    assert [r.name for r in list_runtimes()][:4] == ["cell", "mindir", "air", "onnx"]  # later ones may follow
    assert get_runtime("ONNX") is get_runtime("onnx") and get_runtime("CKPT") is get_runtime("cell")
    assert runtime_for("w.safetensors").name == "cell" and runtime_for("M.MINDIR").name == "mindir"
    with pytest.raises(ValueError, match=r"^m.tflite: expected a model file ending in one of .ckpt, .pth"):
        runtime_for("m.tflite")
    with pytest.raises(ValueError, match=r"^unknown runtime 'tflite'; known: cell, mindir, air, onnx"):
        get_runtime("tflite")
    with pytest.raises(ValueError, match="runtime 'onnx': its name is empty or taken"):
        register_runtime(get_runtime("onnx"))


def test_air_cannot_be_run_here(tmp_path):
    with pytest.raises(ExportError, match="AIR export needs an Ascend device"):
        get_runtime("air").check_available("CPU")
    with pytest.raises(ValueError, match="m.air: MindSpore cannot run AIR files"):
        get_runtime("air").open(tmp_path / "m.air")


def test_shared_metadata_checks_are_one_line():
    with pytest.raises(ValueError, match=r"^m: expected a MindIR with one tensor input, found 2$"):
        exported_meta("m", [(1, 3, 8, 8), (1,)], [(1, 3)], None, "a MindIR")
    with pytest.raises(ValueError, match=r"^m: expected a static \[N, C, H, W\] input, found \['batch', 3, 8, 8\]$"):
        exported_meta("m", [("batch", 3, 8, 8)], [("batch", 3)], None, "an ONNX model")
    with pytest.raises(ValueError, match=r"^m: expected \[N, num_classes\] logits, found output \[2, 3\]$"):
        exported_meta("m", [(1, 3, 8, 8)], [(2, 3)], None, "a MindIR")
    with pytest.raises(ValueError, match=r"^m: metadata 'ppt_preprocess' is not valid JSON"):
        exported_meta("m", [(1, 3, 8, 8)], [(1, 3)], "{", "a MindIR")


def test_a_config_of_another_model_is_refused(tiny):
    folder, cfg, _ = tiny
    predictor = get_runtime("cell").open(folder / "w.ckpt", cfg=cfg, batch_size=2)
    assert predictor.preprocess is None and preprocess_from_config(cfg).img_size == 32
    other = {**cfg, "model": {**cfg["model"], "num_classes": 5}}
    with pytest.raises(ValueError, match=r"^the config's model \(32 px, 5 classes\) is not the one exported to "
                                         r".*w.ckpt \(32 px, 3 classes\)$"):
        check_config_model(other, predictor)
    with pytest.raises(ValueError, match=r"takes float32 input \[2, 3, 32, 32\] \(batch 2, 32x32 px\), got float32 "
                                         r"\[1, 3, 32, 32\]"):
        predictor(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="w.ckpt: building the model of a checkpoint needs its config"):
        get_runtime("cell").open(folder / "w.ckpt")
