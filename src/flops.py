"""Analytic multiply-accumulate (MAC) counts of DeiT and PPT-DeiT for ONE image.

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
  norm2 ``N' C``; fc1 + fc2 ``2 N' C M``. A PP block runs attention on its ``N`` input tokens and the
  MLP on the ``N' = N - r`` tokens left after the reduction;
- a PP block with ``r > 0`` also pays for its reduction, costed as the POOLING branch (ToMe bipartite
  soft matching), the dearer of the two, so PPT figures are upper bounds for any image:
  importance score (class attention x value norm) ``N``; keys averaged over heads ``N d``; similarity
  of even to odd tokens ``ceil(N/2) * floor(N/2) * d``; size weighting before the merge ``N C``.
  The pruning branch costs only the importance score (its top-k is free);
- final LayerNorm over all remaining tokens ``N C`` (as timm 0.4.12 does), then the classifier head
  ``C K`` (plus the distillation head ``C K`` for distilled models).

The official code decides prune-vs-pool per image and layer, so its profiled figure depends on the
input. With this convention DeiT-S at r=50, blocks 3/6/9 costs 2.94502 G with pooling at every PP block
and 2.94370 G with pruning at every PP block, bracketing the official 2.94441 G. Its importance score
and head-averaged keys are computed in every block, needed or not; here they are counted only where
they are used (a 0.003 % difference).

This is the cost of the algorithm, not of ``src.models``: to keep static shapes that implementation
computes both branches for every image in PP blocks (so it does slightly more work).
"""
from typing import Any, Dict, List, Sequence, Union

from .token_reduction import token_schedule

MacCounts = Dict[str, Union[int, List[int]]]

# Attributes of src.models.VisionTransformer that count_macs reads.
_MODEL_ATTRS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio",
                "num_classes", "distilled", "num_prefix_tokens", "num_patches", "ppt_layers", "ppt_r",
                "tokens_per_block")


def _reduction_macs(num_tokens: int, embed_dim: int, head_dim: int) -> int:
    """MACs of one PPT reduction of ``num_tokens`` tokens, pooling branch (see the module docstring)."""
    score = num_tokens  # class attention x value norm, one product per token
    metric = num_tokens * head_dim  # keys averaged over heads: ToMe's similarity metric
    similarity = ((num_tokens + 1) // 2) * (num_tokens // 2) * head_dim  # even tokens @ odd tokens^T
    weighting = num_tokens * embed_dim  # x * size before the size-weighted merge
    return score + metric + similarity + weighting


def _block_macs(n_in: int, n_out: int, embed_dim: int, num_heads: int, hidden_dim: int) -> int:
    """MACs of one transformer block: attention on ``n_in`` tokens, reduction to ``n_out``, MLP."""
    head_dim = embed_dim // num_heads
    macs = n_in * embed_dim  # norm1
    macs += n_in * embed_dim * 3 * embed_dim  # qkv
    macs += 2 * num_heads * n_in * n_in * head_dim  # q @ k^T and attn @ v
    macs += num_heads * n_in * n_in  # logits * scale
    macs += n_in * embed_dim * embed_dim  # proj
    if n_out < n_in:
        macs += _reduction_macs(n_in, embed_dim, head_dim)
    macs += n_out * embed_dim  # norm2
    macs += 2 * n_out * embed_dim * hidden_dim  # fc1 + fc2
    return macs


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"count_macs_arch: {name} must be an int >= {minimum}, got {value!r}")


def count_macs_arch(*, img_size: int, patch_size: int, in_chans: int = 3, embed_dim: int, depth: int,
                    num_heads: int, mlp_ratio: float = 4.0, num_classes: int = 1000, distilled: bool = False,
                    layers: Sequence[int] = (), r: Union[int, Sequence[int]] = 0) -> MacCounts:
    """MACs of one image through a (PPT-)DeiT described by its architecture, without building it.

    ``layers`` are the 0-based PP blocks and ``r`` the tokens each removes (one int for all, or one value
    per entry of ``layers``), clamped as the model does (:func:`src.token_reduction.token_schedule`).
    ``num_classes=0`` means no classifier head. Returns ``{"total": int, "per_block": [int] * depth}``:
    ``per_block[i]`` is block ``i`` including its reduction; ``total`` adds the patch embedding, the final
    norm and the head(s).
    """
    for name, value, minimum in (("img_size", img_size, 1), ("patch_size", patch_size, 1),
                                 ("in_chans", in_chans, 1), ("embed_dim", embed_dim, 1), ("depth", depth, 1),
                                 ("num_heads", num_heads, 1), ("num_classes", num_classes, 0)):
        _check_int(name, value, minimum)
    if img_size % patch_size:
        raise ValueError(f"count_macs_arch: img_size {img_size} is not divisible by patch_size {patch_size}")
    if embed_dim % num_heads:
        raise ValueError(f"count_macs_arch: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or int(embed_dim * mlp_ratio) < 1:
        raise ValueError(f"count_macs_arch: mlp_ratio must be a number with embed_dim * mlp_ratio >= 1, "
                         f"got {mlp_ratio!r}")
    if not isinstance(distilled, bool):
        raise ValueError(f"count_macs_arch: distilled must be a bool, got {distilled!r}")

    num_patches = (img_size // patch_size) ** 2
    num_tokens = num_patches + (2 if distilled else 1)
    hidden_dim = int(embed_dim * mlp_ratio)  # as timm and src.models.layers.Block
    tokens_after, _ = token_schedule(num_tokens, depth, list(layers), r)

    per_block = []
    n_in = num_tokens
    for n_out in tokens_after:
        per_block.append(_block_macs(n_in, n_out, embed_dim, num_heads, hidden_dim))
        n_in = n_out
    patch_embed = num_patches * embed_dim * in_chans * patch_size * patch_size
    final_norm = tokens_after[-1] * embed_dim
    heads = (2 if distilled else 1) * embed_dim * num_classes
    return {"total": patch_embed + sum(per_block) + final_norm + heads, "per_block": per_block}


def count_macs(model: Any) -> MacCounts:
    """MACs of one image through a ``src.models.VisionTransformer``, from its attributes only.

    Same result as :func:`count_macs_arch` with the model's architecture and PPT schedule.
    """
    missing = [name for name in _MODEL_ATTRS if not hasattr(model, name)]
    if missing:
        raise TypeError(f"count_macs: {type(model).__name__} lacks {missing}; expected a "
                        f"src.models.VisionTransformer")
    counts = count_macs_arch(img_size=model.img_size, patch_size=model.patch_size, in_chans=model.in_chans,
                             embed_dim=model.embed_dim, depth=model.depth, num_heads=model.num_heads,
                             mlp_ratio=model.mlp_ratio, num_classes=model.num_classes,
                             distilled=bool(model.distilled), layers=model.ppt_layers, r=list(model.ppt_r))
    # count_macs_arch rebuilds the token layout from the architecture: it must be the model's own.
    num_tokens = model.num_patches + model.num_prefix_tokens
    expected = token_schedule(num_tokens, model.depth, list(model.ppt_layers), list(model.ppt_r))[0]
    if (model.num_prefix_tokens != (2 if model.distilled else 1)
            or model.num_patches != (model.img_size // model.patch_size) ** 2
            or tuple(model.tokens_per_block) != expected):
        raise ValueError(f"count_macs: inconsistent model: num_patches={model.num_patches}, "
                         f"num_prefix_tokens={model.num_prefix_tokens}, tokens_per_block="
                         f"{tuple(model.tokens_per_block)} vs {expected} from its architecture")
    return counts
