"""mindcv's ViT (``mindcv.models.vit.VisionTransformer``, mindcv 0.3.0) with PPT: its checkpoints load one to one.

mindcv's ViT is timm's (class token, position embedding over all tokens, qkv bias, pre-norm blocks, final norm,
head on the class token) built from MindSpore's defaults where timm's differ, which changes the numbers:

- ``nn.GELU()`` is the tanh approximation (timm: exact erf GELU);
- ``nn.LayerNorm`` has epsilon 1e-7 (timm: 1e-6) and names its parameters ``gamma`` / ``beta``.

This module states those differences once; the registered mindcv models (``vit_b_16_224``, ...) use this class.
Options of mindcv's constructor that change the structure (``global_pool='avg'``, ``fc_norm``, ``pre_norm``,
LayerScale, ``qk_norm``, ``no_embed_class``, no class token) are not supported: ``src.checkpoint`` refuses such
checkpoints.
"""
from collections.abc import Mapping

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import initializer

from ..token_reduction import PPTSetting
from .layers import Block
from .spec import ViTSpec
from .vit import VisionTransformer

__all__ = ["MINDCV_NORM_EPS", "MindcvLayerNorm", "MindcvBlock", "MindcvVisionTransformer"]

MINDCV_NORM_EPS = 1e-7  # nn.LayerNorm's default epsilon, which mindcv's ViT keeps


class MindcvLayerNorm(nn.Cell):
    """LayerNorm over the last axis with ``nn.LayerNorm``'s parameter names (``gamma``, ``beta``) and epsilon."""

    def __init__(self, dim: int, eps: float = MINDCV_NORM_EPS):
        super().__init__()
        self.gamma = Parameter(initializer("ones", (dim,), ms.float32))
        self.beta = Parameter(initializer("zeros", (dim,), ms.float32))
        self.layer_norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x: Tensor) -> Tensor:
        y, _, _ = self.layer_norm(x, self.gamma.astype(x.dtype), self.beta.astype(x.dtype))
        return y


class MindcvBlock(Block):
    """:class:`Block` with mindcv's norms and its tanh-approximated GELU; the token reduction sits where it does
    in every PP block (after the attention residual)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0, **kwargs):
        super().__init__(dim, num_heads, mlp_ratio, drop_path, **kwargs)
        self.norm1 = MindcvLayerNorm(dim)
        self.norm2 = MindcvLayerNorm(dim)
        self.mlp.act = nn.GELU(approximate=True)


class MindcvVisionTransformer(VisionTransformer):
    """:class:`VisionTransformer` with mindcv's blocks and final norm (see the module docstring)."""

    def __init__(self, spec: ViTSpec, num_classes: int = 1000, ppt: None | PPTSetting | Mapping = None,
                 drop_path_rate: float = 0.0,
                 block_fn: type[Block] = MindcvBlock):
        super().__init__(spec, num_classes=num_classes, ppt=ppt, drop_path_rate=drop_path_rate, block_fn=block_fn)
        self.norm = MindcvLayerNorm(spec.embed_dim)
