"""The layers of src/models/layers.py: the norm and activation classes a model is built from, and the costs each
layer class states (src.flops sums them), checked against built layers."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from src.models import MindcvVisionTransformer, VisionTransformer, ViTSpec
from src.models.families.mindcv import MindcvLayerNorm
from src.models.layers import (
    GELU,
    Attention,
    Block,
    LayerNorm,
    LayerScale,
    LayerScaleBlock,
    Linear,
    Mlp,
    PatchEmbed,
)

DIM, HEADS, RATIO = 8, 2, 3.0


def _size(cell: nn.Cell) -> int:
    return sum(p.size for p in cell.get_parameters())


@pytest.mark.parametrize("cell, stated", [
    (Linear(8, 5), Linear.num_params(8, 5)),
    (LayerNorm(DIM), LayerNorm.num_params(DIM)),
    (MindcvLayerNorm(DIM), MindcvLayerNorm.num_params(DIM)),
    (LayerScale(DIM, 0.5), LayerScale.num_params(DIM)),
    (PatchEmbed(32, 8, 3, DIM), PatchEmbed.num_params(8, 3, DIM)),
    (Mlp(DIM, 24), Mlp.num_params(DIM, 24)),
    (Attention(DIM, HEADS), Attention.num_params(DIM)),
    (Block(DIM, HEADS, RATIO), Block.num_params(DIM, RATIO)),
    (LayerScaleBlock(DIM, HEADS, RATIO), LayerScaleBlock.num_params(DIM, RATIO)),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Cell) else "")
def test_each_layer_states_its_parameter_count(cell, stated):
    assert _size(cell) == stated


def test_block_macs_by_hand():
    # 5 tokens in, 4 out: norm1, qkv, q k^T + attn v, logit scaling, proj | norm2, fc1 + fc2 on the 4 left
    attention = 5 * DIM + 5 * DIM * 3 * DIM + 2 * 5 * 5 * DIM + HEADS * 5 * 5 + 5 * DIM * DIM
    mlp = 4 * DIM + 2 * 4 * DIM * 24
    assert Block.macs(5, 4, DIM, HEADS, RATIO) == attention + mlp  # no reducer: nothing for the reduction
    assert LayerScaleBlock.macs(5, 4, DIM, HEADS, RATIO) == attention + mlp + (5 + 4) * DIM


def test_norm_and_activation_are_constructor_arguments():
    spec = ViTSpec(img_size=32, patch_size=16, embed_dim=DIM, depth=2, num_heads=HEADS)
    plain, mindcv = VisionTransformer(spec, 10), MindcvVisionTransformer(spec, 10)
    for model, norm, approximate in ((plain, LayerNorm, "none"), (mindcv, MindcvLayerNorm, "tanh")):
        norms = [model.norm] + [blk.norm1 for blk in model.blocks] + [blk.norm2 for blk in model.blocks]
        assert {type(n) for n in norms} == {norm}
        assert all(isinstance(blk.mlp.act, nn.GELU) and blk.mlp.act.approximate == approximate
                   for blk in model.blocks)
    assert {n.split(".")[-1] for n, _ in mindcv.parameters_and_names() if "norm" in n} == {"gamma", "beta"}
    # the same classes given as arguments build the same model
    given = VisionTransformer(spec, 10, norm_layer=MindcvLayerNorm, act_layer=nn.GELU)
    assert [n for n, _ in given.parameters_and_names()] == [n for n, _ in mindcv.parameters_and_names()]
    assert isinstance(GELU(), nn.GELU) and GELU().approximate == "none"


def test_mindcv_norm_is_mindspores_layer_norm_bit_for_bit():
    """mindcv builds its norms with nn.LayerNorm (gamma, beta, epsilon 1e-7); the family's class gives its numbers."""
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((2, 5, DIM)).astype(np.float32) * 1e-3)
    ours, theirs = MindcvLayerNorm(DIM), nn.LayerNorm((DIM,))
    for name in ("gamma", "beta"):
        value = ms.Tensor(rng.standard_normal(DIM).astype(np.float32))
        getattr(ours, name).set_data(value)
        getattr(theirs, name).set_data(value)
    np.testing.assert_array_equal(ours(x).asnumpy(), theirs(x).asnumpy())
    assert not np.array_equal(LayerNorm(DIM)(x).asnumpy(), MindcvLayerNorm(DIM)(x).asnumpy())  # epsilon matters
