"""DeiT (Touvron et al.) with PPT token pruning & pooling inside chosen blocks."""
from typing import Sequence, Union

import mindspore as ms
from mindspore import Tensor, nn, ops

from ..token_reduction import token_schedule
from .layers import Block, LayerNorm, Linear, PatchEmbed, trunc_normal_param


class VisionTransformer(nn.Cell):
    """DeiT, optionally distilled (class + distillation token, two heads averaged at inference).

    PPT is configured by ``ppt_layers`` (0-based blocks that reduce tokens), ``ppt_r`` (an int or one value
    per layer, clamped to ``(N - 1) // 2``), ``ppt_threshold`` (score variance below it -> pool, else prune)
    and ``prop_attn`` (proportional attention in the blocks after the first PP block).
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0, distilled: bool = False, ppt_layers: Sequence[int] = (),
                 ppt_r: Union[int, Sequence[int]] = 0, ppt_threshold: float = 0.0, prop_attn: bool = True):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if ppt_threshold < 0:
            raise ValueError(f"ppt threshold must be >= 0, got {ppt_threshold}")
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.num_classes, self.embed_dim, self.depth = num_classes, embed_dim, depth
        self.num_heads, self.mlp_ratio, self.distilled = num_heads, float(mlp_ratio), distilled
        self.num_prefix_tokens = 2 if distilled else 1

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.num_patches = self.patch_embed.num_patches
        num_tokens = self.num_patches + self.num_prefix_tokens
        self.cls_token = trunc_normal_param((1, 1, embed_dim))
        if distilled:
            self.dist_token = trunc_normal_param((1, 1, embed_dim))
        self.pos_embed = trunc_normal_param((1, num_tokens, embed_dim))

        self.tokens_per_block, clamped = token_schedule(num_tokens, depth, list(ppt_layers), ppt_r)
        # token_schedule returns the clamped r in block order, so it pairs with the sorted layers
        block_r = dict(zip(sorted(ppt_layers), clamped))
        self.ppt_layers = tuple(i for i in sorted(ppt_layers) if block_r[i] > 0)
        self.ppt_r = tuple(block_r[i] for i in self.ppt_layers)
        self.ppt_threshold = float(ppt_threshold)
        first_pp = self.ppt_layers[0] if self.ppt_layers else depth
        dpr = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.CellList([
            Block(embed_dim, num_heads, mlp_ratio, dpr[i],
                  # sizes are all 1 up to the first PP block, where log(size) would add zeros
                  prop_attn=prop_attn and i > first_pp,
                  r=block_r.get(i, 0), threshold=self.ppt_threshold, num_protected=self.num_prefix_tokens)
            for i in range(depth)])
        self.norm = LayerNorm(embed_dim)
        self.head = Linear(embed_dim, num_classes)
        if distilled:
            self.head_dist = Linear(embed_dim, num_classes)

    def _tokens(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        b = x.shape[0]
        prefix = [ops.broadcast_to(self.cls_token.astype(x.dtype), (b, 1, self.embed_dim))]
        if self.distilled:
            prefix.append(ops.broadcast_to(self.dist_token.astype(x.dtype), (b, 1, self.embed_dim)))
        return ops.concat(prefix + [x], axis=1) + self.pos_embed.astype(x.dtype)

    def _head(self, x: Tensor) -> Tensor:
        x = self.norm(x)
        logits = self.head(x[:, 0])
        if self.distilled:
            logits = (logits + self.head_dist(x[:, 1])) / 2
        return logits

    def forward_with_stats(self, x: Tensor, trace: bool = False):
        """Logits plus, per PP block, which images were pooled (``[B, L]`` bool) and their score variance
        (``[B, L]`` float32); with no PP block both are ``[B, 0]``.

        With ``trace=True`` also a tuple with, per PP block, the ``[B, N_after, N0]`` float32 matrix whose
        row i marks the initial tokens (prefix tokens, then patches in raster order) that token i stands for
        after that block's reduction, per image, through any mix of pruning and pooling.
        """
        x = self._tokens(x)
        b, n = x.shape[0], x.shape[1]
        size = ops.ones((b, n, 1), ms.float32)
        source = ops.broadcast_to(ops.eye(n, n, ms.float32).expand_dims(0), (b, n, n)) if trace else None
        pooled, svar, sources = (), (), ()
        for blk in self.blocks:
            x, size, source, p, s = blk(x, size, source)
            if blk.r > 0:
                pooled += (p.reshape(-1, 1),)
                svar += (s.reshape(-1, 1),)
                if trace:
                    sources += (source,)
        if pooled:
            pooled, svar = ops.concat(pooled, axis=1), ops.concat(svar, axis=1)
        else:
            svar = ops.zeros((b, 0), ms.float32)
            pooled = svar.astype(ms.bool_)
        if trace:
            return self._head(x), pooled, svar, sources
        return self._head(x), pooled, svar

    def construct(self, x: Tensor) -> Tensor:
        x = self._tokens(x)
        size = ops.ones((x.shape[0], x.shape[1], 1), ms.float32)
        for blk in self.blocks:
            x, size = blk(x, size)[:2]  # unpacking the unused outputs makes graph mode warn
        return self._head(x)


class PPTStats(nn.Cell):
    """Wraps a model so that ``construct`` returns ``(logits, pooled, svar)``, plus the token sources when
    ``trace`` (see ``forward_with_stats``); the model's own ``construct`` stays the lean inference path."""

    def __init__(self, model: VisionTransformer, trace: bool = False):
        # No prefix: wrapping must not rename the model's parameters (saved weights keep timm's names).
        super().__init__(auto_prefix=False)
        self.model = model
        self.trace = trace

    def construct(self, x: Tensor):
        return self.model.forward_with_stats(x, self.trace)
