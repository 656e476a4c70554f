"""DeiT (Touvron et al.) / ViT with PPT token pruning & pooling (or another reduction policy) in chosen blocks."""
import functools
from collections.abc import Callable, Mapping

import mindspore as ms
from mindspore import Tensor, nn, ops

from ..token_reduction import PPTSetting, TokenReducer, get_policy
from .layers import GELU, Block, LayerNorm, LayerScaleBlock, Linear, PatchEmbed, trunc_normal_param
from .spec import ViTSpec

LayerCounts = dict[str, int | list[int]]


def spec_block(spec: ViTSpec) -> Callable[..., Block]:
    """The block an architecture uses: DeiT III's LayerScale block when ``spec.layer_scale_init`` is set."""
    if spec.layer_scale_init is None:
        return Block
    return functools.partial(LayerScaleBlock, init_values=spec.layer_scale_init)


def layer_class(layer: Callable[..., nn.Cell]) -> type[nn.Cell]:
    """The class a layer argument builds (timm passes a class or a ``functools.partial`` of one): its cost."""
    return layer.func if isinstance(layer, functools.partial) else layer


class VisionTransformer(nn.Cell):
    """DeiT / ViT, optionally distilled (class + distillation token, two heads averaged at inference), with
    token reduction in the PP blocks of ``ppt``.

    Args:
        spec: the architecture (``src.models.model_spec(name)``, possibly with overrides).
        num_classes: classifier outputs.
        ppt: None (no reduction) or a :class:`PPTSetting` (a dict with its keys works too); each PP block gets
            an instance of the setting's policy with its r clamped to ``(N - 1) // 2``.
        drop_path_rate: stochastic depth of the last block (linear from 0); training only.
        block_fn: the block class (timm's ``block_fn``): a variant block is a new class, not an edit; by
            default the spec's (:func:`spec_block`).
        norm_layer, act_layer: what builds every norm (the blocks' and the final one; called with the width) and
            the MLPs' activation (called without arguments), as in timm; by default the class's
            (:attr:`norm_layer`, :attr:`act_layer`), which a family's subclass sets.

    :meth:`layer_macs` and :meth:`layer_params` report the cost of each layer from its class (``src.flops``
    sums them).
    """

    norm_layer: Callable[[int], nn.Cell] = LayerNorm  # timm's names and epsilon
    act_layer: Callable[[], nn.Cell] = GELU  # exact GELU

    def __init__(self, spec: ViTSpec, num_classes: int = 1000, ppt: None | PPTSetting | Mapping = None,
                 drop_path_rate: float = 0.0, block_fn: Callable[..., Block] | None = None,
                 norm_layer: Callable[[int], nn.Cell] | None = None, act_layer: Callable[[], nn.Cell] | None = None):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
        self.spec, self.ppt = spec, PPTSetting.coerce(ppt)
        self.img_size, self.patch_size, self.in_chans = spec.img_size, spec.patch_size, spec.in_chans
        self.num_classes, self.embed_dim, self.depth = num_classes, spec.embed_dim, spec.depth
        self.num_heads, self.mlp_ratio, self.distilled = spec.num_heads, float(spec.mlp_ratio), spec.distilled
        self.num_prefix_tokens, self.num_patches = spec.num_prefix_tokens, spec.num_patches
        self.no_embed_class = spec.no_embed_class  # a plain bool: graph mode branches on it at compile time

        self.patch_embed = PatchEmbed(spec.img_size, spec.patch_size, spec.in_chans, spec.embed_dim)
        self.cls_token = trunc_normal_param((1, 1, spec.embed_dim))
        if spec.distilled:
            self.dist_token = trunc_normal_param((1, 1, spec.embed_dim))
        self.pos_embed = trunc_normal_param((1, spec.pos_embed_len, spec.embed_dim))
        # kept (plain attributes, not cells) so that the built model is costed by the classes it was built from
        self.block_fn = block_fn = block_fn or spec_block(spec)
        self.norm_layer = norm_layer = norm_layer or self.norm_layer
        act_layer = act_layer or self.act_layer

        reducers = self._reducers()
        self.ppt_layers = tuple(sorted(reducers))
        self.ppt_r = tuple(reducers[i].r for i in self.ppt_layers)
        first_pp = self.ppt_layers[0] if self.ppt_layers else spec.depth
        prop_attn = self.ppt is not None and self.ppt.prop_attn
        dpr = [drop_path_rate * i / max(spec.depth - 1, 1) for i in range(spec.depth)]
        self.blocks = nn.CellList([
            # sizes are all 1 up to the first PP block, where log(size) would add zeros
            block_fn(spec.embed_dim, spec.num_heads, spec.mlp_ratio, dpr[i], prop_attn=prop_attn and i > first_pp,
                     reducer=reducers.get(i), norm_layer=norm_layer, act_layer=act_layer)
            for i in range(spec.depth)])
        self.norm = norm_layer(spec.embed_dim)
        self.head = Linear(spec.embed_dim, num_classes)
        if spec.distilled:
            self.head_dist = Linear(spec.embed_dim, num_classes)

    def _reducers(self) -> dict[int, TokenReducer]:
        """One policy instance per PP block whose clamped r is > 0; sets ``tokens_per_block``."""
        if self.ppt is None:
            self.tokens_per_block = (self.spec.num_tokens,) * self.spec.depth
            return {}
        self.tokens_per_block, clamped = self.ppt.schedule(self.spec.num_tokens, self.spec.depth)
        policy = get_policy(self.ppt.policy)
        threshold = self.ppt.threshold or 0.0
        return {i: policy(r, self.spec.num_prefix_tokens, threshold)
                for i, r in zip(self.ppt.layers, clamped) if r > 0}

    @classmethod
    def layer_macs(cls, spec: ViTSpec, num_classes: int = 1000, ppt: PPTSetting | None = None,
                   block_fn: Callable[..., Block] | None = None,
                   norm_layer: Callable[[int], nn.Cell] | None = None) -> LayerCounts:
        """MACs of one image through each layer of a model of architecture ``spec`` built with these arguments
        (``src.flops``' convention), unbuilt: ``patch_embed``, ``blocks`` (one int per block, its reduction
        included; ``ppt``'s r clamped as the model clamps it), ``norm`` and ``heads``."""
        block, norm = layer_class(block_fn or spec_block(spec)), layer_class(norm_layer or cls.norm_layer)
        c, n_in = spec.embed_dim, spec.num_tokens
        tokens_after = (n_in,) * spec.depth if ppt is None else ppt.schedule(n_in, spec.depth)[0]
        reducer = get_policy(ppt.policy) if ppt is not None else None
        blocks = []
        for n_out in tokens_after:
            blocks.append(block.macs(n_in, n_out, c, spec.num_heads, spec.mlp_ratio, norm, reducer))
            n_in = n_out
        return {"patch_embed": PatchEmbed.macs(spec.img_size, spec.patch_size, spec.in_chans, c), "blocks": blocks,
                "norm": norm.macs(n_in, c),  # over every token left, as timm 0.4.12 does
                "heads": (2 if spec.distilled else 1) * Linear.macs(1, c, num_classes)}

    @classmethod
    def layer_params(cls, spec: ViTSpec, num_classes: int = 1000, block_fn: Callable[..., Block] | None = None,
                     norm_layer: Callable[[int], nn.Cell] | None = None) -> LayerCounts:
        """Parameters of each layer of a model of architecture ``spec``, unbuilt (building ViT-L takes most of a
        minute on a CPU): ``embed`` (patch projection, prefix tokens, position embedding), ``blocks``, ``norm``,
        ``heads``."""
        block, norm = layer_class(block_fn or spec_block(spec)), layer_class(norm_layer or cls.norm_layer)
        c = spec.embed_dim
        embed = PatchEmbed.num_params(spec.patch_size, spec.in_chans, c) + (spec.num_prefix_tokens
                                                                              + spec.pos_embed_len) * c
        return {"embed": embed, "blocks": [block.num_params(c, spec.mlp_ratio, norm)] * spec.depth,
                "norm": norm.num_params(c), "heads": (2 if spec.distilled else 1) * Linear.num_params(c, num_classes)}

    def _embed(self, x: Tensor) -> Tensor:
        """Images -> patch tokens with the prefix token(s) prepended and the position embedding added (to
        the patches only, before the prefix is prepended, with ``no_embed_class``: DeiT III)."""
        x = self.patch_embed(x)
        b = x.shape[0]
        prefix = [ops.broadcast_to(self.cls_token.astype(x.dtype), (b, 1, self.embed_dim))]
        if self.distilled:
            prefix.append(ops.broadcast_to(self.dist_token.astype(x.dtype), (b, 1, self.embed_dim)))
        if self.no_embed_class:
            return ops.concat(prefix + [x + self.pos_embed.astype(x.dtype)], axis=1)
        return ops.concat(prefix + [x], axis=1) + self.pos_embed.astype(x.dtype)

    def forward_head(self, x: Tensor) -> Tensor:
        """Final-normed tokens -> logits from the class token (averaged with the distillation head's)."""
        logits = self.head(x[:, 0])
        if self.distilled:
            logits = (logits + self.head_dist(x[:, 1])) / 2
        return logits

    def forward_heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Images -> (class-head logits, distillation-head logits) of a distilled model: DeiT's distillation
        trains the two heads on different targets."""
        x = self.forward_features(x)
        return self.head(x[:, 0]), self.head_dist(x[:, 1])

    def forward_with_stats(self, x: Tensor, trace: bool = False):
        """Logits plus, per PP block, which images were pooled (``[B, L]`` bool) and their score variance
        (``[B, L]`` float32); with no PP block both are ``[B, 0]``.

        With ``trace=True`` also a tuple with, per PP block, the ``[B, N_after, N0]`` float32 matrix whose
        row i marks the initial tokens (prefix tokens, then patches in raster order) that token i stands for
        after that block's reduction, per image, through any mix of pruning and pooling.
        """
        x = self._embed(x)
        b, n = x.shape[0], x.shape[1]
        size = ops.ones((b, n, 1), ms.float32)
        source = ops.broadcast_to(ops.eye(n, n, ms.float32).expand_dims(0), (b, n, n)) if trace else None
        pooled, svar, sources = (), (), ()
        for blk in self.blocks:
            x, size, source, p, s = blk(x, size, source)
            if blk.reduces:
                pooled += (p.reshape(-1, 1),)
                svar += (s.reshape(-1, 1),)
                if trace:
                    sources += (source,)
        if pooled:
            pooled, svar = ops.concat(pooled, axis=1), ops.concat(svar, axis=1)
        else:
            svar = ops.zeros((b, 0), ms.float32)
            pooled = svar.astype(ms.bool_)
        logits = self.forward_head(self.norm(x))
        if trace:
            return logits, pooled, svar, sources
        return logits, pooled, svar

    def forward_features(self, x: Tensor) -> Tensor:
        """Images -> the final-normed tokens left after the last block (the lean path: no statistics)."""
        x = self._embed(x)
        size = ops.ones((x.shape[0], x.shape[1], 1), ms.float32)
        for blk in self.blocks:
            x, size = blk(x, size)[:2]  # unpacking the unused outputs makes graph mode warn
        return self.norm(x)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


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
