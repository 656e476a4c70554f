"""mindcv's ViT (``mindcv.models.vit.VisionTransformer``, mindcv 0.3.0) with PPT: its checkpoints load one to one.

mindcv's ViT is timm's (class token, position embedding over all tokens, qkv bias, pre-norm blocks, final norm,
head on the class token) built from MindSpore's defaults where timm's differ, which changes the numbers:

- ``nn.GELU()`` is the tanh approximation (timm: exact erf GELU);
- ``nn.LayerNorm`` has epsilon 1e-7 (timm: 1e-6) and names its parameters ``gamma`` / ``beta``.

Those are the model's ``norm_layer`` and ``act_layer``. Options of mindcv's constructor that change the structure
(``global_pool='avg'``, ``fc_norm``, ``pre_norm``, LayerScale, ``qk_norm``, ``no_embed_class``, no class token)
are not supported: the family refuses such checkpoints (:meth:`MindcvViT.check_state`).
"""
import math
import re

import numpy as np
from mindspore import nn

from ..layers import LayerNorm
from ..vit import VisionTransformer
from .base import ModelFamily

__all__ = ["MINDCV_NORM_EPS", "MindcvLayerNorm", "MindcvVisionTransformer", "MindcvViT", "MINDCV_VIT"]

MINDCV_NORM_EPS = 1e-7  # nn.LayerNorm's default epsilon, which mindcv's ViT keeps


class MindcvLayerNorm(LayerNorm):
    """:class:`LayerNorm` with ``nn.LayerNorm``'s parameter names and epsilon."""

    param_names = ("gamma", "beta")
    default_eps = MINDCV_NORM_EPS


class MindcvVisionTransformer(VisionTransformer):
    """:class:`VisionTransformer` with mindcv's norms and its tanh-approximated GELU (``nn.GELU()``'s default);
    the token reduction sits where it does in every PP block (after the attention residual)."""

    norm_layer = MindcvLayerNorm
    act_layer = nn.GELU


_UNSUPPORTED = (  # (entry name pattern, what it means)
    (r"fc_norm\.", "fc_norm (global_pool='avg' or fc_norm=True)"),
    (r"norm_pre\.", "pre_norm=True"),
    (r"blocks\.\d+\.ls[12]\.", "LayerScale (init_values)"),
    (r"blocks\.\d+\.attn\.[qk]_norm\.", "qk_norm=True"),
)
# mindcv 0.3.0's default_cfgs with a url
_PUBLISHED = {"vit_b_32_224", "vit_l_16_224", "vit_l_32_224"}


class MindcvViT(ModelFamily):
    """A .ckpt saved from mindcv's ViT has the model's names as they are (no renaming)."""

    name = "mindcv ViT"
    model_cls = MindcvVisionTransformer
    weights = "mindcv 0.3.0 `.ckpt`"
    reader = "mindcv's .ckpt as saved"
    ppt = "untuned, scaled"

    def check_state(self, state: dict[str, np.ndarray], source: str) -> None:
        """What the weights reveal of the mindcv options not implemented here. (``global_pool='avg'`` with
        ``fc_norm=False`` leaves no trace in the weights and cannot be detected.)"""
        found = [what for pattern, what in _UNSUPPORTED if any(re.match(pattern, name) for name in state)]
        if "cls_token" not in state:
            found.append("class_token=False")
        pos_embed = state.get("pos_embed")
        if pos_embed is not None and pos_embed.ndim == 3 and math.isqrt(pos_embed.shape[1]) ** 2 == pos_embed.shape[1]:
            found.append("no_embed_class=True")  # position embeddings for the patches only (a square grid)
        if found:
            raise ValueError(f"{source}: a mindcv ViT with {', '.join(found)}: not supported (only the class-token "
                             "head on the final norm, as mindcv's vit_* models build it)")

    def public_weights(self, model: str) -> str:
        return self.weights if model in _PUBLISHED else "none published"


MINDCV_VIT = MindcvViT()
