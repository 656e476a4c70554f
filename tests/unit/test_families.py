"""The families of registered models (src/models/families/): what the registry stores per model, and what the
checkpoint reader and the model table ask of them."""
import numpy as np
import pytest

from src import models
from src.io.checkpoint import check_family_options
from src.models.families.deit import DEIT
from src.models.families.deit3 import DEIT3
from src.models.families.mindcv import MINDCV_VIT, MindcvVisionTransformer
from src.models.families.timm_vit import TIMM_VIT

TINY = dict(img_size=32, patch_size=16, embed_dim=8, depth=1, num_heads=2)


def _state(name: str) -> dict[str, np.ndarray]:
    model = models.create_model(name, num_classes=3, **TINY)
    return {n: np.zeros(p.shape, np.float32) for n, p in model.parameters_and_names()}


def test_every_registered_model_has_a_family_object():
    families = models.list_families()
    assert families[:4] == [DEIT, DEIT3, TIMM_VIT, MINDCV_VIT] and len(set(families)) == len(families)
    assert [f.name for f in families[:4]] == ["DeiT", "DeiT III", "timm ViT", "mindcv ViT"]
    for name in models.list_models():
        family = models.model_family(name)
        assert isinstance(family, models.ModelFamily) and models.model_class(name) is family.model_cls
        assert issubclass(family.model_cls, models.VisionTransformer)
    assert models.model_class("vit_l_32_224") is MindcvVisionTransformer
    assert models.model_class("deit3_base_patch16_224") is models.VisionTransformer


def test_sizes_are_stated_once():
    for name in models.list_models():
        spec = models.model_spec(name)
        assert (spec.embed_dim, spec.depth, spec.num_heads) in models.SIZES.values(), name
    assert (models.model_spec("vit_l_16_224").embed_dim, models.model_spec("deit3_medium_patch16_224").embed_dim) == (
        models.SIZES["large"][0], models.SIZES["medium"][0])


def test_register_model_takes_a_family_object():
    with pytest.raises(TypeError, match=r"register_model\('x'\): family must be a .*ModelFamily, got 'DeiT'"):
        models.register_model("x", models.model_spec("deit_tiny_patch16_224"), "DeiT")
    with pytest.raises(ValueError, match="registered already"):
        models.register_model("deit_tiny_patch16_224", models.model_spec("deit_tiny_patch16_224"), DEIT)
    assert "x" not in models.list_models()


def test_families_recognize_weights_by_their_norms_parameter_names():
    timm_named, mindcv_named = _state("deit_tiny_patch16_224"), _state("vit_b_16_224")
    families = [DEIT, DEIT3, TIMM_VIT, MINDCV_VIT]
    assert [f.name for f in families if f.recognizes(timm_named)] == ["DeiT", "DeiT III", "timm ViT"]
    assert [f.name for f in families if f.recognizes(mindcv_named)] == ["mindcv ViT"]
    no_norms = {n: v for n, v in timm_named.items() if "norm" not in n}
    assert not any(f.recognizes(no_norms) for f in models.list_families())


def test_family_options_are_checked_for_the_recognized_family_only():
    state = _state("vit_b_16_224")
    check_family_options(state)
    with pytest.raises(ValueError, match=r"^f\.ckpt: a mindcv ViT with pre_norm=True: not supported"):
        check_family_options({**state, "norm_pre.gamma": state["norm.gamma"]}, "f.ckpt")
    timm_state = _state("vit_small_patch16_224")  # the same entry in a timm-named file is no mindcv option
    check_family_options({**timm_state, "norm_pre.weight": timm_state["norm.weight"]})


def test_release_renames_are_the_family_s():
    release = {"blocks.0.gamma_1": 1, "blocks.11.gamma_2": 2, "gamma_1": 3, "blocks.0.norm1.weight": 4}
    assert list(DEIT3.rename_release_entries(release)) == ["blocks.0.ls1.gamma", "blocks.11.ls2.gamma", "gamma_1",
                                                           "blocks.0.norm1.weight"]
    assert DEIT.rename_release_entries(release) == release


def test_model_table_text_comes_from_the_family():
    assert DEIT.ppt_origin("deit_small_patch16_224") == "the paper's"
    assert DEIT.ppt_origin("deit_base_patch16_384") == "scaled to 384 px, untuned"
    assert DEIT.ppt_origin("deit_tiny_patch16_224") == "DeiT-S's reused"
    assert TIMM_VIT.public_weights("vit_base_patch16_224") == "timm `.augreg2_in21k_ft_in1k`"
    assert TIMM_VIT.public_weights("vit_base_patch32_224") == "timm `.augreg_in21k_ft_in1k`"
    assert MINDCV_VIT.public_weights("vit_b_32_224") == "mindcv 0.3.0 `.ckpt`"
    assert MINDCV_VIT.public_weights("vit_b_16_224") == "none published"
    assert DEIT3.ppt_origin("deit3_small_patch16_224") == "untuned" and repr(DEIT3) == "<model family DeiT III>"
