"""Shared fixtures: the golden mini DeiT from the official PyTorch PPT code (see tests/fixtures)."""
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent  # the repository
FIXTURES = ROOT / "tests" / "fixtures"
# Architecture of the golden model (tests/fixtures/ppt_reference.json -> arch).
MINI_ARCH = dict(img_size=112, patch_size=8, embed_dim=48, depth=12, num_heads=3)
MINI_CLASSES = 10

ms.set_device("CPU")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: exhaustive checks; run with -m slow (CI runs them too)")


def read_golden(folder: Path = FIXTURES):
    """(reference json, reference npz arrays) of a folder of reference outputs."""
    meta = json.loads((folder / "ppt_reference.json").read_text())
    with np.load(folder / "ppt_reference.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return meta, arrays


@pytest.fixture(scope="session")
def golden():
    """(reference json, reference npz arrays) of the official code's outputs."""
    return read_golden()


@pytest.fixture(scope="session")
def golden_input(golden):
    return golden[1]["input"].astype(np.float32)


def make_mini(ppt=None, name="deit_tiny_patch16_224", weights=True, weights_file="deit_mini.safetensors",
              **overrides):
    """The golden architecture, with the golden weights (``weights_file`` in tests/fixtures) loaded
    (strictly) unless ``weights`` is False."""
    from src.io.checkpoint import load_weights
    from src.models import create_model

    arch = dict(MINI_ARCH, **overrides)
    model = create_model(name, num_classes=MINI_CLASSES, ppt=ppt, **arch)
    if weights:
        load_weights(model, FIXTURES / weights_file)
    model.set_train(False)
    return model


@pytest.fixture(scope="session")
def golden_mixed_model(golden):
    """The golden mini DeiT with the golden "mixed" setting, one for the session so that graph mode compiles its
    lean path once (~16 s) for tests/unit/test_golden.py and test_mindir.py. Tests must not change it."""
    c = golden[0]["cases"]["mixed"]
    return make_mini(dict(r=c["r"], layers=c["layers"], threshold=c["threshold"], prop_attn=True))


@pytest.fixture
def graph_mode():
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture(params=["pynative", "graph"])
def any_mode(request):
    ms.set_context(mode=ms.GRAPH_MODE if request.param == "graph" else ms.PYNATIVE_MODE)
    yield request.param
    ms.set_context(mode=ms.PYNATIVE_MODE)


def macs_of(num_classes=1000, layers=(), r=0, policy="ppt", **spec):
    """``count_macs_spec`` of ``ViTSpec(**spec)`` with ``r`` removed at ``layers`` by ``policy``."""
    from src.flops import count_macs_spec
    from src.models import ViTSpec
    from src.token_reduction import PPTSetting

    ppt = None
    if len(layers):
        ppt = PPTSetting(r=tuple(r) if isinstance(r, (list, tuple)) else r, layers=tuple(layers), threshold=0.0,
                         policy=policy)
    return count_macs_spec(ViTSpec(**spec), num_classes, ppt)
