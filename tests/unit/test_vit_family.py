"""timm's ViTs and mindcv's ViTs: registrations, MACs and parameter counts, mindcv checkpoints against mindcv itself,
and weights of one family refused by another."""
import re

import mindspore as ms
import numpy as np
import pytest

from src.analysis.zoo import zoo_markdown
from src.flops import count_macs, count_macs_spec, count_params_spec
from src.io.checkpoint import (
    CheckpointMismatchError,
    convert_checkpoint,
    infer_model_args,
    load_weights,
    read_state_dict,
)
from src.models import MindcvVisionTransformer, create_model, list_models, model_class, model_spec
from src.token_reduction import PPTSetting

from ..conftest import ROOT

# (embed, depth, heads) of timm's sizes (timm/models/vision_transformer.py: vit_<size>_patch<p>_<img>)
TIMM_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}
TIMM_VITS = [f"vit_{s}_patch{p}_{i}" for s, p, i in (
    ("tiny", 16, 224), ("tiny", 16, 384), ("small", 16, 224), ("small", 16, 384), ("small", 32, 224),
    ("small", 32, 384), ("base", 16, 224), ("base", 16, 384), ("base", 32, 224), ("base", 32, 384),
    ("large", 16, 224), ("large", 16, 384), ("large", 32, 224), ("large", 32, 384))]
# mindcv 0.3.0's mindcv.models.vit.__all__
MINDCV_VITS = ["vit_b_16_224", "vit_b_16_384", "vit_l_16_224", "vit_l_16_384", "vit_b_32_224", "vit_b_32_384",
               "vit_l_32_224"]
VITS = [name for name in list_models() if name.startswith("vit_")]
# Published GMACs of the plain models, by (embed, depth, patch, img): ViT-B/16, B/32, S/16, L/16 as issue 11 quotes
# them (timm's figures); DeiT-B at 384 px 55.5 (DeiT paper, Table 1; the same architecture). (DeiT-Ti's 1.3 has too
# few digits for a 1 % check.)
PUBLISHED_GMACS = {(768, 12, 16, 224): 17.6, (768, 12, 32, 224): 4.4, (384, 12, 16, 224): 4.6,
                   (1024, 24, 16, 224): 61.6, (768, 12, 16, 384): 55.5}
TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)


def _arch(name: str) -> tuple[int, int, int, int]:
    spec = model_spec(name)
    return spec.embed_dim, spec.depth, spec.patch_size, spec.img_size


def test_timm_and_mindcv_vits_are_registered_with_their_shapes():
    assert sorted(VITS) == sorted(TIMM_VITS + MINDCV_VITS)
    for name in TIMM_VITS:
        size, patch, img = re.fullmatch(r"vit_(\w+)_patch(\d+)_(\d+)", name).groups()
        spec = model_spec(name)
        assert (spec.embed_dim, spec.depth, spec.num_heads) == TIMM_SIZES[size], name
        assert (spec.patch_size, spec.img_size, spec.mlp_ratio, spec.distilled) == (int(patch), int(img), 4.0, False)
        assert model_class(name) is not MindcvVisionTransformer
    for name in MINDCV_VITS:
        size, patch, img = re.fullmatch(r"vit_([bl])_(\d+)_(\d+)", name).groups()
        timm_twin = f"vit_{'base' if size == 'b' else 'large'}_patch{patch}_{img}"
        assert model_spec(name) == model_spec(timm_twin) and model_class(name) is MindcvVisionTransformer


@pytest.mark.parametrize("name", [n for n in VITS if _arch(n) in PUBLISHED_GMACS])
def test_macs_within_one_percent_of_the_published_figure(name):
    macs = count_macs_spec(model_spec(name))["total"] / 1e9
    assert macs == pytest.approx(PUBLISHED_GMACS[_arch(name)], rel=0.01)


@pytest.mark.parametrize("name", VITS)
def test_macs_of_every_vit_against_the_closed_form(name):
    """The leading terms by hand (qkv, proj, MLP: 12 N C^2; q k^T and attn v: 2 N^2 C; the patch projection),
    for the models without a published figure too: right token count, depth and width."""
    spec = model_spec(name)
    n, c = spec.num_tokens, spec.embed_dim
    closed = spec.depth * (12 * n * c * c + 2 * n * n * c) + spec.num_patches * c * 3 * spec.patch_size ** 2
    assert count_macs_spec(spec)["total"] == pytest.approx(closed, rel=0.01)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_and_counts(name):
    """Spec, MACs (plain and with its config's kind of setting) and parameters of every registered model; the
    parameter formula is checked on a built small model of the same class (building ViT-L takes a minute)."""
    spec, cls = model_spec(name), model_class(name)
    plain = count_macs_spec(spec, model_cls=cls)["total"]
    ppt = count_macs_spec(spec, ppt=PPTSetting(r=8, layers=(0,), threshold=1e-4), model_cls=cls)["total"]
    assert 0 < ppt < plain and count_params_spec(spec, model_cls=cls) > 5e6
    small = create_model(name, num_classes=10, **TINY)
    assert type(small) is cls
    assert sum(p.size for p in small.get_parameters()) == count_params_spec(small.spec, 10, cls)
    assert count_macs(small) == count_macs_spec(small.spec, 10, model_cls=cls)  # the built model's layers


@pytest.mark.parametrize("name,params", [("vit_tiny_patch16_224", 5.7), ("vit_small_patch32_224", 22.9),
                                         ("vit_base_patch32_384", 88.3), ("vit_large_patch16_224", 304.3),
                                         ("vit_large_patch32_224", 306.5), ("vit_l_32_224", 306.5)])
def test_parameter_counts_of_large_models(name, params):
    assert count_params_spec(model_spec(name)) / 1e6 == pytest.approx(params, abs=0.05)


# ----------------------------------------------------------------------------------------------- mindcv itself

@pytest.fixture(scope="module")
def mindcv_vit():
    """mindcv's ViT module (a test requirement: requirements-dev.txt)."""
    return pytest.importorskip("mindcv.models.vit", reason="mindcv is not installed (pip install -r "
                                                           "requirements-dev.txt installs mindcv==0.3.0)")


def _mindcv_model(mindcv_vit, seed: int = 0, **kwargs):
    """mindcv's VisionTransformer with random weights, every parameter (norms and biases too) perturbed."""
    model = mindcv_vit.VisionTransformer(**kwargs)
    rng = np.random.default_rng(seed)
    for _, param in model.parameters_and_names():
        value = param.asnumpy() + rng.normal(0.0, 0.05, param.shape).astype(np.float32)
        param.set_data(ms.Tensor(value))
    model.set_train(False)
    return model


def _images(img_size: int, n: int = 3) -> ms.Tensor:
    return ms.Tensor(np.random.default_rng(1).standard_normal((n, 3, img_size, img_size)).astype(np.float32))


def test_mindcv_checkpoint_converts_and_matches_mindcv_logits(mindcv_vit, tmp_path):
    theirs = _mindcv_model(mindcv_vit, image_size=64, patch_size=32, embed_dim=768, depth=2, num_heads=12,
                           num_classes=10)
    ms.save_checkpoint(theirs, str(tmp_path / "mindcv_vit.ckpt"))
    summary = convert_checkpoint(tmp_path / "mindcv_vit.ckpt", tmp_path / "out.ckpt")
    # the architecture is inferred among mindcv's models; the width gives num_heads
    assert ": vit_b_32_224 (num_classes=10, img_size=64, depth=2)" in summary
    ours = create_model("vit_b_32_224", num_classes=10, img_size=64, depth=2)
    load_weights(ours, tmp_path / "out.ckpt")
    ours.set_train(False)
    x = _images(64)
    np.testing.assert_allclose(ours(x).asnumpy(), theirs(x).asnumpy(), rtol=0, atol=1e-5)


def test_mindcv_checkpoint_loads_directly_in_both_modes(mindcv_vit, tmp_path):
    theirs = _mindcv_model(mindcv_vit, seed=2, image_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=3,
                           num_classes=10)
    ms.save_checkpoint(theirs, str(tmp_path / "small.ckpt"))
    x = _images(32)
    expected = theirs(x).asnumpy()
    for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
        ms.set_context(mode=mode)
        try:
            ours = create_model("vit_b_16_224", num_classes=10, **dict(TINY, depth=4))
            load_weights(ours, tmp_path / "small.ckpt")
            ours.set_train(False)
            np.testing.assert_allclose(ours(x).asnumpy(), expected, rtol=0, atol=1e-5)
        finally:
            ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.mark.parametrize("kwargs,what", [
    (dict(global_pool="avg"), r"fc_norm \(global_pool='avg' or fc_norm=True\)"),
    (dict(fc_norm=True), "fc_norm"),
    (dict(pre_norm=True), "pre_norm=True"),
    (dict(init_values=1e-5), r"LayerScale \(init_values\)"),
    (dict(no_embed_class=True), "no_embed_class=True"),
])
def test_unsupported_mindcv_options_are_refused_in_one_line(mindcv_vit, tmp_path, kwargs, what):
    theirs = _mindcv_model(mindcv_vit, image_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3,
                           num_classes=10, **kwargs)
    path = tmp_path / "unsupported.ckpt"
    ms.save_checkpoint(theirs, str(path))
    ours = create_model("vit_b_16_224", num_classes=10, **TINY)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: a mindcv ViT with {what}.*: not supported") as e:
        load_weights(ours, path)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="not supported"):
        convert_checkpoint(path, tmp_path / "out.ckpt")
    assert not (tmp_path / "out.ckpt").exists()


# ----------------------------------------------------------------------------------------------- across families

def _random_state(model) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.standard_normal(p.shape).astype(np.float32) for name, p in model.parameters_and_names()}


def _save_state(path, state: dict[str, np.ndarray]) -> None:
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in state.items()], str(path))


def test_mindcv_weights_into_a_timm_vit_and_back_fail_strictly(tmp_path):
    mindcv_state = _random_state(create_model("vit_b_16_224", num_classes=10, **TINY))
    timm_state = _random_state(create_model("vit_small_patch16_224", num_classes=10, **TINY))
    _save_state(tmp_path / "mindcv.ckpt", mindcv_state)
    _save_state(tmp_path / "timm.ckpt", timm_state)
    pattern = (r"does not match the model: missing 10: \[blocks\.0\.norm1\.{} \(48\);.*\| unexpected 10: "
               r"\[blocks\.0\.norm1\.{} \(48\);")
    with pytest.raises(CheckpointMismatchError, match=pattern.format("weight", "gamma")):
        load_weights(create_model("vit_small_patch16_224", num_classes=10, **TINY), tmp_path / "mindcv.ckpt")
    with pytest.raises(CheckpointMismatchError, match=pattern.format("gamma", "weight")):
        load_weights(create_model("vit_b_16_224", num_classes=10, **TINY), tmp_path / "timm.ckpt")


def test_deit3_like_weights_into_a_timm_vit_fail_strictly(tmp_path):
    """DeiT III adds LayerScale (ls1.gamma, ls2.gamma) and has position embeddings for the patches only."""
    state = _random_state(create_model("vit_small_patch16_224", num_classes=10, **TINY))
    state["pos_embed"] = state["pos_embed"][:, 1:]
    for i in range(TINY["depth"]):
        state[f"blocks.{i}.ls1.gamma"] = np.ones(48, np.float32)
        state[f"blocks.{i}.ls2.gamma"] = np.ones(48, np.float32)
    _save_state(tmp_path / "deit3.ckpt", state)
    expected = (r"unexpected 4: \[blocks\.0\.ls1\.gamma \(48\);.*\| "
                r"mismatched 1: \[pos_embed file \(1,16,48\) vs model \(1,17,48\)")
    with pytest.raises(CheckpointMismatchError, match=expected):
        load_weights(create_model("vit_small_patch16_224", num_classes=10, **TINY), tmp_path / "deit3.ckpt")


def test_uninferable_checkpoint_names_the_shapes_it_saw():
    state = {"patch_embed.proj.weight": np.zeros((48, 3, 8, 8), np.float32),
             "pos_embed": np.zeros((1, 17, 48), np.float32), "head.weight": np.zeros((10, 48), np.float32)}
    with pytest.raises(ValueError, match=r"^x\.ckpt: cannot infer the architecture: no 'blocks\.0\.mlp\.fc1\.weight' "
                                         r"entry .*; it holds 3 entries; patch_embed\.proj\.weight \(48,3,8,8\), "
                                         r"pos_embed \(1,17,48\), head\.weight \(10,48\)"):
        infer_model_args(state, "x.ckpt")


def test_timm_vit_and_deit_shapes_are_told_apart_by_name_or_not_at_all(tmp_path):
    state = _random_state(create_model("vit_small_patch16_224", depth=1))
    _save_state(tmp_path / "model.ckpt", state)
    with pytest.raises(ValueError, match=r"fit 2 registered models with the same architecture with depth=1 but their "
                                         r"own data settings: deit_small_patch16_224, vit_small_patch16_224"):
        convert_checkpoint(tmp_path / "model.ckpt", tmp_path / "out.ckpt")
    _save_state(tmp_path / "vit_small_patch16_224.augreg_in21k_ft_in1k.ckpt", state)
    assert ": vit_small_patch16_224 (num_classes=1000, depth=1)" in convert_checkpoint(
        tmp_path / "vit_small_patch16_224.augreg_in21k_ft_in1k.ckpt", tmp_path / "out.ckpt")
    assert set(read_state_dict(tmp_path / "out.ckpt")) == set(state)


# ----------------------------------------------------------------------------------------------- README

def test_readme_models_table_is_the_registry():
    assert zoo_markdown() in (ROOT / "README.md").read_text(encoding="utf-8")


def test_mindcv_model_with_ppt_is_the_same_in_both_modes():
    """mindcv's block keeps the reduction where every PP block has it: PyNative and graph mode agree, decisions too."""
    from src.models import PPTStats  # pylint: disable=import-outside-toplevel

    ms.set_seed(0)
    model = create_model("vit_b_16_224", num_classes=10, ppt={"r": 4, "layers": [0, 1], "threshold": 4e-5}, **TINY)
    model.set_train(False)
    x = _images(32, 4)
    outputs = []
    for mode in (ms.PYNATIVE_MODE, ms.GRAPH_MODE):
        ms.set_context(mode=mode)
        try:
            outputs.append([t.asnumpy() for t in PPTStats(model)(x)])
        finally:
            ms.set_context(mode=ms.PYNATIVE_MODE)
    (logits, pooled, svar), (logits_g, pooled_g, svar_g) = outputs
    np.testing.assert_allclose(logits_g, logits, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(pooled_g, pooled)
    assert pooled.any() and not pooled.all()  # a mixed batch: both branches taken
    np.testing.assert_allclose(svar_g, svar, rtol=1e-5)
    assert model.tokens_per_block == (13, 9)
