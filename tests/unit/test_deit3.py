"""DeiT III: LayerScale and the patch-only position embedding, checked against timm and the PPT algorithm with
LayerScale (tests/fixtures/deit3/), plus its registry entries, MACs and checkpoint handling."""
import mindspore as ms
import numpy as np
import pytest

from src.deploy import export_model
from src.deploy.onnx_graph import expected_patterns
from src.flops import count_macs_spec
from src.io.checkpoint import (
    CheckpointMismatchError,
    convert_checkpoint,
    infer_model_args,
    load_weights,
    read_state_dict,
)
from src.models import ViTSpec, create_model, list_models, model_spec
from src.token_reduction import PPTSetting

from ..conftest import FIXTURES, MINI_ARCH, make_mini, read_golden
from ..torch_zip import state_to_pth
from .test_golden import assert_matches_golden, golden_ppt

DEIT3 = FIXTURES / "deit3"
WEIGHTS = "deit3/deit3_mini.safetensors"
CASES = ["baseline", "prune_all", "pool_all", "mixed"]


@pytest.fixture(scope="module")
def golden3():
    return read_golden(DEIT3)


def make_mini3(ppt=None, **kwargs):
    return make_mini(ppt, name="deit3_small_patch16_224", weights_file=WEIGHTS, **kwargs)


# Graph mode for the cases that hold both branches and none: PPT's code is the DeiT's, whose golden test
# compiles every case; PyNative for all of them.
@pytest.mark.parametrize("case, any_mode", [(c, "pynative") for c in CASES]
                         + [(c, "graph") for c in ("baseline", "mixed")], indirect=["any_mode"])
def test_golden_case(case, golden3, any_mode):
    x = golden3[1]["input"].astype(np.float32)
    assert_matches_golden(make_mini3(golden_ppt(golden3[0]["cases"][case])), x, case, golden3)


def test_mixed_batch_really_mixes(golden3):
    pooled = golden3[1]["mixed/pooled_layer3"]
    assert 0 < pooled.sum() < pooled.size


def test_layer_scale_and_pos_embed_matter(golden3):
    """The fixture's gammas are far from 1 and its pos_embed covers the patches only: a model without either
    cannot load it, and with the gammas set to 1 the logits move far off."""
    model = make_mini3()
    names = {n: tuple(p.shape) for n, p in model.parameters_and_names()}
    assert names["pos_embed"] == (1, 196, 48)
    assert names["blocks.11.ls1.gamma"] == names["blocks.0.ls2.gamma"] == (48,)
    for name, param in model.parameters_and_names():
        if ".ls" in name:
            param.set_data(ms.ops.ones_like(param))
    x = ms.Tensor(golden3[1]["input"].astype(np.float32))
    assert np.abs(model(x).asnumpy() - golden3[1]["baseline/logits"]).max() > 1e-2


# ------------------------------------------------------------------------------------------ registry and MACs

# timm's model cards (timm/deit3_*.fb_in1k): GMACs and parameters (M), as published (one decimal).
TIMM_STATS = {"deit3_small_patch16_224": (4.6, 22.1), "deit3_small_patch16_384": (15.5, 22.2),
              "deit3_medium_patch16_224": (8.0, 38.8), "deit3_base_patch16_224": (17.6, 86.6),
              "deit3_base_patch16_384": (55.5, 86.9), "deit3_large_patch16_224": (61.6, 304.4),
              "deit3_large_patch16_384": (191.2, 304.8)}


def test_registry_has_timm_deit3_models():
    assert sorted(n for n in list_models() if n.startswith("deit3_")) == sorted(TIMM_STATS)
    spec = model_spec("deit3_large_patch16_384")
    assert (spec.embed_dim, spec.depth, spec.num_heads, spec.img_size) == (1024, 24, 16, 384)
    assert spec.layer_scale_init == 1e-6 and spec.no_embed_class and spec.pos_embed_len == 576
    assert model_spec("deit_base_patch16_384").pos_embed_len == 577


@pytest.mark.parametrize("name", sorted(TIMM_STATS))
def test_macs_within_one_percent_of_timm(name):
    gmacs = count_macs_spec(model_spec(name))["total"] / 1e9
    assert abs(gmacs / TIMM_STATS[name][0] - 1) < 0.01, gmacs


def test_layer_scale_macs_are_counted_once_per_branch():
    deit3 = model_spec("deit3_small_patch16_224")
    plain = ViTSpec(embed_dim=384, num_heads=6, no_embed_class=True)  # the same without LayerScale
    ppt = PPTSetting(r=50, layers=(3, 6, 9), threshold=0.0)
    a, b = count_macs_spec(deit3, ppt=ppt)["per_block"], count_macs_spec(plain, ppt=ppt)["per_block"]
    assert [x - y for x, y in zip(a, b)] == [(197 + 197) * 384] * 3 + [(197 + 147) * 384] + [(147 + 147) * 384] * 2 \
        + [(147 + 97) * 384] + [(97 + 97) * 384] * 2 + [(97 + 49) * 384] + [(49 + 49) * 384] * 2


@pytest.mark.parametrize("name", ["deit3_small_patch16_224", "deit3_small_patch16_384", "deit3_medium_patch16_224"])
def test_parameter_count_and_init_match_timm(name):
    params = dict(create_model(name).parameters_and_names())
    assert round(sum(int(np.prod(p.shape)) for p in params.values()) / 1e6, 1) == TIMM_STATS[name][1]
    dim = model_spec(name).embed_dim
    np.testing.assert_array_equal(params["blocks.3.ls2.gamma"].asnumpy(), np.full(dim, 1e-6, np.float32))
    assert not any(".ls" in n for n, _ in create_model("deit_small_patch16_224").parameters_and_names())


# ------------------------------------------------------------------------------------------ checkpoints

def _shapes(name: str, **kwargs) -> dict[str, np.ndarray]:
    return {n: np.zeros(p.shape, np.float32) for n, p in create_model(name, **kwargs).parameters_and_names()}


@pytest.mark.parametrize("name", ["deit3_base_patch16_384", "deit3_medium_patch16_224"])
def test_infer_deit3_from_shapes(name):
    assert infer_model_args(_shapes(name, num_classes=5)) == (name, 5, {})


def test_infer_deit3_with_overrides():
    state = _shapes("deit3_small_patch16_224", num_classes=10, img_size=112, patch_size=8, depth=3)
    assert infer_model_args(state) == ("deit3_small_patch16_224", 10, {"img_size": 112, "patch_size": 8, "depth": 3})
    # the same shapes without LayerScale are a DeiT, whose pos_embed also holds the class token
    plain = {n: v for n, v in state.items() if ".ls" not in n}
    with pytest.raises(ValueError, match=r"pos_embed \(1,196,384\) does not hold a square grid"):
        infer_model_args(plain)


def test_release_layer_scale_names_are_read_as_timm_names(tmp_path):
    """The DeiT III release .pth files name the LayerScale vectors gamma_1 / gamma_2."""
    state = read_state_dict(DEIT3 / "deit3_mini.safetensors")
    release = {n.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2"): v for n, v in state.items()}
    assert "blocks.0.gamma_1" in release
    state_to_pth(tmp_path / "deit_3_mini.pth", release)
    again = read_state_dict(tmp_path / "deit_3_mini.pth")
    assert list(again) == list(state)
    for name in state:
        np.testing.assert_array_equal(again[name], state[name])


def test_convert_deit3_and_reload(tmp_path, golden3):
    summary = convert_checkpoint(DEIT3 / "deit3_mini.safetensors", tmp_path / "deit3.ckpt", "deit3_small_patch16_224",
                                 **MINI_ARCH)
    assert "deit3_small_patch16_224 (num_classes=10, img_size=112, patch_size=8, embed_dim=48" in summary
    model = create_model("deit3_small_patch16_224", num_classes=10, **MINI_ARCH)
    load_weights(model, tmp_path / "deit3.ckpt")
    model.set_train(False)
    x = ms.Tensor(golden3[1]["input"].astype(np.float32))
    np.testing.assert_allclose(model(x).asnumpy(), golden3[1]["baseline/logits"], atol=1e-4, rtol=0)


def _mismatch(model_name: str, weights: str) -> str:
    with pytest.raises(CheckpointMismatchError) as info:
        make_mini(name=model_name, weights_file=weights)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_deit3_weights_into_deit_fail_strictly():
    message = _mismatch("deit_small_patch16_224", WEIGHTS)
    assert "unexpected 24: [blocks.0.ls1.gamma (48); blocks.0.ls2.gamma (48); blocks.1.ls1.gamma (48); ...]" in message
    assert "mismatched 1: [pos_embed file (1,196,48) vs model (1,197,48)]" in message


def test_deit_weights_into_deit3_fail_strictly():
    message = _mismatch("deit3_small_patch16_224", "deit_mini.safetensors")
    assert "missing 24: [blocks.0.ls1.gamma (48); blocks.0.ls2.gamma (48); blocks.1.ls1.gamma (48); ...]" in message
    assert "mismatched 1: [pos_embed file (1,197,48) vs model (1,196,48)]" in message


# ------------------------------------------------------------------------------------------ export

def _tiny3(seed: int = 0):
    """A tiny random DeiT III with one PP block and LayerScale gammas far from their init."""
    model = create_model("deit3_small_patch16_224", num_classes=10, img_size=32, patch_size=8, embed_dim=48, depth=4,
                         num_heads=3, ppt=dict(r=4, layers=[1], threshold=1e-4, prop_attn=True))
    rng = np.random.default_rng(seed)
    for name, param in model.parameters_and_names():
        if ".ls" in name:
            param.set_data(ms.Tensor(rng.uniform(0.1, 0.9, param.shape).astype(np.float32)))
    model.set_train(False)
    return model


@pytest.mark.parametrize("fmt", ["MINDIR", "ONNX"])
def test_export_is_verified_on_reload(fmt, tmp_path, graph_mode):
    if fmt == "ONNX":
        pytest.importorskip("onnxruntime")
    model = _tiny3()
    result = export_model(model, tmp_path / "deit3", fmt, 2)
    assert result.max_abs_diff is not None and result.max_abs_diff <= result.tolerance, result.summary()
    if fmt == "ONNX":  # the rewrite found every GELU and LayerNorm of the model (4 + 2 * 4 + 1)
        assert expected_patterns(model) == {"gelu": 4, "layernorm": 9}
        assert "4 GELU -> Erf, 9 LayerNorm -> LayerNormalization" in result.note
