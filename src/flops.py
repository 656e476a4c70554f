"""Analytic multiply-accumulate (MAC) counts of DeiT (and DeiT III) with and without PPT for ONE image.

Convention. The official PPT figures (DeiT-S 4.6 G; ``macs:2.944411999GFLOPs`` for r=50 at blocks
3, 6, 9) were measured with ``torchprofile.profile_macs`` on the official PyTorch code, so this module
counts what torchprofile counts for that code:

- matmul-like ops (linear layers, the patch-embedding convolution, ``q @ k^T``, ``attn @ v``, the
  pooling similarity ``a @ b^T``): ``m * n * k``; biases are free;
- LayerNorm, element-wise multiplications and means: one MAC per output element;
- softmax, GELU, additions, divisions, logarithms, vector norms, variance, sorting, top-k,
  gather/scatter: zero.

What is counted, with ``N`` tokens entering a block, ``N'`` leaving it, width ``C``, ``H`` heads of
size ``d = C / H``, MLP width ``M``:

- patch embedding: ``num_patches * C * in_chans * p^2``;
- every block: norm1 ``N C``; qkv ``3 N C^2``; ``q @ k^T`` and ``attn @ v`` ``N^2 C`` each; the
  attention-logit scaling ``H N^2`` (the official code scales the logits, not ``q``); proj ``N C^2``;
  norm2 ``N' C``; fc1 + fc2 ``2 N' C M``; with LayerScale (DeiT III), its per-channel products on the
  attention branch ``N C`` and on the MLP branch ``N' C`` (element-wise multiplications, so counted). A PP
  block runs attention on its ``N`` input tokens and the MLP on the ``N' = N - r`` tokens left after the
  reduction;
- a PP block with ``r > 0`` also pays for its reduction, as its policy states
  (``src.token_reduction.policies``, ``TokenReducer.macs``). PPT (``ppt``) is costed as its POOLING
  branch (ToMe bipartite soft matching), the dearer of the two, so PPT figures are upper bounds for any
  image: importance score (class attention x value norm) ``N``; keys averaged over heads ``N d``;
  similarity of even to odd tokens ``ceil(N/2) * floor(N/2) * d``; size weighting before the merge
  ``N C``. ``prune`` costs only the importance score (its top-k is free), ``pool`` everything but it;
- final LayerNorm over all remaining tokens ``N C`` (as timm 0.4.12 does), then the classifier head
  ``C K`` (plus the distillation head ``C K`` for distilled models).

The official code decides prune-vs-pool per image and layer, so its profiled figure depends on the
input. With this convention DeiT-S at r=50, blocks 3/6/9 costs 2.94502 G with pooling at every PP block
and 2.94370 G with pruning at every PP block, bracketing the official 2.94441 G. Its importance score
and head-averaged keys are computed in every block, needed or not; here they are counted only where
they are used (a 0.003 % difference).

This is the cost of the algorithm, not of ``src.models``: to keep static shapes the ``ppt`` policy
computes both branches for every image in PP blocks (so it does slightly more work).
"""
from typing import Any

from .models import ViTSpec
from .token_reduction import PPTSetting, get_policy

MacCounts = dict[str, int | list[int]]


def _block_macs(n_in: int, n_out: int, spec: ViTSpec, reduction_macs: int) -> int:
    """MACs of one transformer block: attention on ``n_in`` tokens, a reduction to ``n_out``, the MLP."""
    c, h, d = spec.embed_dim, spec.num_heads, spec.head_dim
    macs = n_in * c  # norm1
    macs += n_in * c * 3 * c  # qkv
    macs += 2 * h * n_in * n_in * d  # q @ k^T and attn @ v
    macs += h * n_in * n_in  # logits * scale
    macs += n_in * c * c  # proj
    macs += reduction_macs
    macs += n_out * c  # norm2
    macs += 2 * n_out * c * spec.hidden_dim  # fc1 + fc2
    if spec.layer_scale_init is not None:
        macs += (n_in + n_out) * c  # ls1 on the attention branch, ls2 on the MLP branch
    return macs


def count_macs_spec(spec: ViTSpec, num_classes: int = 1000, ppt: PPTSetting | None = None) -> MacCounts:
    """MACs of one image through a model of architecture ``spec`` with token reduction ``ppt``, unbuilt.

    ``ppt``'s r is clamped as the model does (``PPTSetting.schedule``); ``num_classes=0`` means no
    classifier head. Returns ``{"total": int, "per_block": [int] * depth}``: ``per_block[i]`` is block ``i``
    including its reduction; ``total`` adds the patch embedding, the final norm and the head(s).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"count_macs_spec: num_classes must be an int >= 0, got {num_classes!r}")
    depth, n_in = spec.depth, spec.num_tokens
    tokens_after = (n_in,) * depth if ppt is None else ppt.schedule(n_in, depth)[0]
    reduction = get_policy(ppt.policy).macs if ppt is not None else None
    per_block = []
    for n_out in tokens_after:
        cost = reduction(n_in, spec.embed_dim, spec.head_dim) if n_out < n_in else 0
        per_block.append(_block_macs(n_in, n_out, spec, cost))
        n_in = n_out
    patch_embed = spec.num_patches * spec.embed_dim * spec.in_chans * spec.patch_size ** 2
    final_norm = tokens_after[-1] * spec.embed_dim
    heads = (2 if spec.distilled else 1) * spec.embed_dim * num_classes  # a distilled DeiT has two heads
    return {"total": patch_embed + sum(per_block) + final_norm + heads, "per_block": per_block}


def count_params_spec(spec: ViTSpec, num_classes: int = 1000) -> int:
    """Parameters of a model of architecture ``spec``, unbuilt (building ViT-L takes most of a minute on a CPU)."""
    c, m = spec.embed_dim, spec.hidden_dim
    embed = c * spec.in_chans * spec.patch_size ** 2 + c + spec.num_prefix_tokens * c + spec.pos_embed_len * c
    block = 4 * c + (3 * c * c + 3 * c) + (c * c + c) + (c * m + m) + (m * c + c)  # norms, qkv, proj, fc1, fc2
    block += 2 * c if spec.layer_scale_init is not None else 0  # LayerScale's ls1, ls2 gammas
    heads = (2 if spec.distilled else 1) * (c * num_classes + num_classes)
    return embed + spec.depth * block + 2 * c + heads


def count_macs(model: Any) -> MacCounts:
    """MACs of one image through a built ``src.models.VisionTransformer`` (its spec, classes and setting)."""
    if not all(hasattr(model, name) for name in ("spec", "num_classes", "ppt")):
        raise TypeError(f"count_macs: expected a src.models.VisionTransformer, got a {type(model).__name__}")
    return count_macs_spec(model.spec, model.num_classes, model.ppt)
