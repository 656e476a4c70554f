"""Analytic MACs counter (src/flops.py): published DeiT / PPT figures, hand-computed cases, models."""
import mindspore as ms
import numpy as np
import pytest

from src.flops import count_macs, count_params_spec
from src.models import VisionTransformer, ViTSpec
from src.models.layers import Block, LayerNorm
from src.token_reduction import PPTSetting, token_schedule

from ..conftest import macs_of

_WIDTHS = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}
PPT_OFFICIAL = dict(layers=[3, 6, 9], r=50)  # the README setting of the official code
PPT_OFFICIAL_MACS = 2.944411999e9  # its printed "macs:2.944411999GFLOPs" (torchprofile, one image)


def deit(size: str, **kwargs) -> dict:
    """DeiT-{T,S,B}/16 at 224 px as macs_of keyword arguments."""
    embed_dim, num_heads = _WIDTHS[size]
    return dict(img_size=224, patch_size=16, embed_dim=embed_dim, depth=12, num_heads=num_heads, **kwargs)


def rel_err(value: float, reference: float) -> float:
    return abs(value - reference) / reference


def test_deit_small_baseline_is_published_4_6g():
    assert rel_err(macs_of(**deit("small"))["total"], 4.6e9) < 0.005


def test_deit_small_ppt_matches_official_figure():
    assert rel_err(macs_of(**deit("small", **PPT_OFFICIAL))["total"], PPT_OFFICIAL_MACS) < 0.005


@pytest.mark.parametrize("size, published_g", [("tiny", 1.3), ("base", 17.6)])
def test_deit_tiny_base_baselines_are_published(size, published_g):
    total_g = macs_of(**deit(size))["total"] / 1e9
    # DeiT publishes one decimal; DeiT-T's exact count is 1.256 G, i.e. 3.4 % under its rounded 1.3.
    assert round(total_g, 1) == published_g
    if size == "base":
        assert rel_err(total_g, published_g) < 0.01


def test_deit_small_ppt_saving_ratio():
    base = macs_of(**deit("small"))["total"]
    ppt = macs_of(**deit("small", **PPT_OFFICIAL))["total"]
    assert abs(base / ppt - 1.56) < 0.01  # official 4.6 G / 2.944 G


def test_r_zero_equals_baseline():
    base = macs_of(**deit("small"))
    assert macs_of(**deit("small", layers=[3, 6, 9], r=0)) == base
    assert macs_of(**deit("small", layers=[3, 6, 9], r=[0, 0, 0])) == base


def test_per_layer_r_list():
    same = macs_of(**deit("small", layers=[3, 6, 9], r=[50, 50, 50]))
    assert same == macs_of(**deit("small", **PPT_OFFICIAL))
    schedule = macs_of(**deit("small", layers=[2, 5, 8], r=[30, 60, 90]))
    # r pairs with its layer, whatever order the layers are given in
    assert macs_of(**deit("small", layers=[8, 2, 5], r=[90, 30, 60])) == schedule
    assert macs_of(**deit("small", layers=[2, 5, 8], r=[90, 60, 30])) != schedule
    per_block = schedule["per_block"]
    # tokens 197 | 167 167 167 | 107 107 107 | 54 ...: blocks without a reduction cost the same as the
    # reducing block's successors, and each reduction makes the following blocks cheaper
    assert per_block[0] == per_block[1] > per_block[3] == per_block[4] > per_block[6] == per_block[7]
    assert per_block[7] > per_block[9] == per_block[10] == per_block[11]


def test_clamp_matches_token_schedule():
    every_block = list(range(12))
    greedy = macs_of(**deit("small", layers=every_block, r=200))
    tokens, clamped = token_schedule(197, 12, every_block, 200)
    assert min(tokens) >= 2 and clamped[-1] == 0  # 197 -> 99 -> 50 -> ... -> 2 tokens, then nothing
    assert greedy == macs_of(**deit("small", layers=every_block, r=list(clamped)))
    # once nothing can be removed, a PP block costs exactly a plain block on the same tokens
    assert greedy["per_block"][-1] == greedy["per_block"][-2]
    assert greedy["total"] < macs_of(**deit("small", **PPT_OFFICIAL))["total"]


# A 32 px, 16 px-patch model: 4 patches, width 8, 2 heads of 4, MLP 32, 2 blocks, 10 classes.
MINI = dict(img_size=32, patch_size=16, embed_dim=8, depth=2, num_heads=2, num_classes=10)
PATCH_EMBED = 4 * 8 * (3 * 16 * 16)


def test_exact_count_by_hand():
    # 5 tokens; block 0 removes 1 (clamp allows (5 - 1) // 2 = 2) -> 4 tokens
    block0 = (5 * 8  # norm1
              + 5 * 8 * 24  # qkv
              + 2 * (2 * 5 * 5 * 4)  # q @ k^T, attn @ v
              + 2 * 5 * 5  # logit scaling
              + 5 * 8 * 8  # proj
              + 5 + 5 * 4 + 3 * 2 * 4 + 5 * 8  # score, key mean, 3 even x 2 odd similarity, size weighting
              + 4 * 8  # norm2
              + 2 * 4 * 8 * 32)  # fc1 + fc2 on the 4 remaining tokens
    block1 = 4 * 8 + 4 * 8 * 24 + 2 * (2 * 4 * 4 * 4) + 2 * 4 * 4 + 4 * 8 * 8 + 4 * 8 + 2 * 4 * 8 * 32
    counts = macs_of(**MINI, layers=[0], r=1)
    assert counts["per_block"] == [block0, block1] == [3939, 3424]
    assert counts["total"] == PATCH_EMBED + block0 + block1 + 4 * 8 + 8 * 10  # + final norm + head


def test_distilled_adds_one_token_and_one_head():
    # 6 tokens (class + distillation); block 0 removes 1 -> 5
    block0 = (6 * 8 + 6 * 8 * 24 + 2 * (2 * 6 * 6 * 4) + 2 * 6 * 6 + 6 * 8 * 8
              + 6 + 6 * 4 + 3 * 3 * 4 + 6 * 8
              + 5 * 8 + 2 * 5 * 8 * 32)
    block1 = 5 * 8 + 5 * 8 * 24 + 2 * (2 * 5 * 5 * 4) + 2 * 5 * 5 + 5 * 8 * 8 + 5 * 8 + 2 * 5 * 8 * 32
    counts = macs_of(**MINI, distilled=True, layers=[0], r=1)
    assert counts["per_block"] == [block0, block1]
    assert counts["total"] == PATCH_EMBED + block0 + block1 + 5 * 8 + 2 * (8 * 10)  # two heads
    # at DeiT-S scale: beyond the blocks, one more token through the final norm and a second head
    plain, dist = macs_of(**deit("small")), macs_of(**deit("small", distilled=True))
    extra_blocks = sum(dist["per_block"]) - sum(plain["per_block"])
    assert extra_blocks > 0
    assert dist["total"] - plain["total"] == extra_blocks + 384 + 384 * 1000


def test_no_head_when_num_classes_is_zero():
    with_head = macs_of(**dict(MINI, num_classes=10))["total"]
    assert macs_of(**dict(MINI, num_classes=0))["total"] == with_head - 8 * 10


def test_count_macs_of_official_ppt_model():
    from src.models import create_model

    model = create_model("deit_small_patch16_224", ppt=dict(PPT_OFFICIAL, threshold=7e-5, prop_attn=True))
    counts = count_macs(model)
    assert counts == macs_of(embed_dim=384, num_heads=6, **PPT_OFFICIAL)
    assert rel_err(counts["total"], PPT_OFFICIAL_MACS) < 0.005


@pytest.mark.parametrize("name, ppt", [
    ("deit_tiny_patch16_224", None),
    ("deit_tiny_distilled_patch16_224", {"r": [3, 200], "layers": [2, 0], "threshold": 0.0, "prop_attn": False}),
])
def test_count_macs_of_a_built_model(name, ppt):
    from src.models import create_model

    overrides = dict(img_size=64, embed_dim=16, depth=4, num_heads=2, mlp_ratio=3.0)
    model = create_model(name, num_classes=7, ppt=ppt, **overrides)
    layers, r = (ppt["layers"], ppt["r"]) if ppt else ((), 0)
    assert count_macs(model) == macs_of(num_classes=7, layers=layers, r=r, distilled="distilled" in name, **overrides)


def test_each_policy_states_its_reduction_cost():
    # The pooling branch (metric, similarity, size weighting) is the dearer one: PPT is costed as it plus the
    # importance score, prune as the score alone, the plain slice as nothing.
    totals = {p: macs_of(policy=p, **deit("small", **PPT_OFFICIAL))["total"]
              for p in ("ppt", "prune", "pool", "keep_first")}
    assert totals["keep_first"] < totals["prune"] < totals["pool"] < totals["ppt"]
    n, c, d = 197, 384, 64  # block 3 reduces 197 tokens
    assert totals["ppt"] - totals["pool"] == n + 147 + 97  # the score, once per PP block
    assert totals["pool"] - totals["keep_first"] == sum(
        t * d + ((t + 1) // 2) * (t // 2) * d + t * c for t in (n, 147, 97))


def test_count_macs_rejects_other_objects():
    with pytest.raises(TypeError, match="VisionTransformer"):
        count_macs(object())


@pytest.mark.parametrize("change, message", [
    (dict(embed_dim=9), "embed_dim 9 is not divisible by num_heads 2"),
    (dict(img_size=33), "img_size 33 is not divisible by patch_size 16"),
    (dict(depth=0), "depth: expected an int >= 1, got 0"),
    (dict(num_classes=-1), "num_classes must be an int >= 0"),
    (dict(mlp_ratio=0.0), "mlp_ratio"),
    (dict(distilled="yes"), "distilled: expected true or false"),
    (dict(layers=[0, 1], r=[1]), r"ppt r: expected an int >= 0 or one per entry of the PP layers \[0, 1\] \(2 "),
    (dict(layers=[2], r=1), r"PP layers \[2\]"),
])
def test_bad_arguments_raise(change, message):
    with pytest.raises(ValueError, match=message):
        macs_of(**dict(MINI, **change))


def test_spec_derived_sizes():
    spec = ViTSpec(embed_dim=384, num_heads=6, distilled=True)
    assert (spec.num_patches, spec.num_prefix_tokens, spec.num_tokens, spec.head_dim, spec.hidden_dim) == (
        196, 2, 198, 64, 1536)


class _ExtraNormBlock(Block):
    """A block variant with one more layer (a norm on the MLP branch), which states its cost next to its code."""

    def __init__(self, dim, *args, norm_layer=LayerNorm, **kwargs):
        super().__init__(dim, *args, norm_layer=norm_layer, **kwargs)
        self.norm3 = norm_layer(dim)

    def scale_mlp(self, out):
        return self.norm3(out)

    @classmethod
    def macs(cls, n_in, n_out, dim, num_heads, mlp_ratio, norm_layer=LayerNorm, reducer=None):
        return super().macs(n_in, n_out, dim, num_heads, mlp_ratio, norm_layer, reducer) + norm_layer.macs(n_out, dim)

    @classmethod
    def num_params(cls, dim, mlp_ratio, norm_layer=LayerNorm):
        return super().num_params(dim, mlp_ratio, norm_layer) + norm_layer.num_params(dim)


def test_a_block_variant_brings_its_cost_without_a_change_here():
    spec = ViTSpec(**{k: v for k, v in MINI.items() if k != "num_classes"})
    ppt = PPTSetting(r=1, layers=(0,), threshold=0.0)
    plain, extra = VisionTransformer(spec, 10, ppt), VisionTransformer(spec, 10, ppt, block_fn=_ExtraNormBlock)
    extra.set_train(False)
    assert extra(ms.Tensor(np.ones((1, 3, 32, 32), np.float32))).shape == (1, 10)  # the variant really runs
    # block 0 reduces 5 tokens to 4: the extra norm runs on the 4 left there and in block 1
    diff = [e - p for e, p in zip(count_macs(extra)["per_block"], count_macs(plain)["per_block"])]
    assert diff == [4 * 8, 4 * 8]
    assert count_macs(extra)["total"] - count_macs(plain)["total"] == 2 * 4 * 8
    stated = VisionTransformer.layer_params(spec, 10, _ExtraNormBlock)
    assert stated["blocks"] == [Block.num_params(8, 4.0) + 2 * 8] * 2
    assert sum(p.size for p in extra.get_parameters()) == count_params_spec(spec, 10) + 2 * 2 * 8
