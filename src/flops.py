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

Each layer class states its own cost next to its code (``src.models.layers``: ``Attention.macs``,
``Block.macs``, ``LayerScaleBlock.macs``, ...; the reduction's in ``TokenReducer.macs``), and the model class
reports each layer's (``VisionTransformer.layer_macs`` / ``layer_params``) from the classes it is built from;
this module sums what they report. A variant block or norm brings its cost with it.
"""
from typing import Any

from .models import VisionTransformer, ViTSpec
from .token_reduction import PPTSetting

MacCounts = dict[str, int | list[int]]


def _total(counts: dict[str, int | list[int]]) -> int:
    return sum(sum(value) if isinstance(value, list) else value for value in counts.values())


def count_macs_spec(spec: ViTSpec, num_classes: int = 1000, ppt: PPTSetting | None = None,
                    model_cls: type[VisionTransformer] = VisionTransformer) -> MacCounts:
    """MACs of one image through a model of architecture ``spec`` with token reduction ``ppt``, unbuilt.

    ``model_cls``: the class that would build it (a family's, ``src.models.model_class(name)``: its layers).
    ``ppt``'s r is clamped as the model does (``PPTSetting.schedule``); ``num_classes=0`` means no classifier
    head. Returns ``{"total": int, "per_block": [int] * depth}``: ``per_block[i]`` is block ``i`` including its
    reduction; ``total`` adds the patch embedding, the final norm and the head(s).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"count_macs_spec: num_classes must be an int >= 0, got {num_classes!r}")
    layers = model_cls.layer_macs(spec, num_classes, ppt)
    return {"total": _total(layers), "per_block": layers["blocks"]}


def count_params_spec(spec: ViTSpec, num_classes: int = 1000,
                      model_cls: type[VisionTransformer] = VisionTransformer) -> int:
    """Parameters of a model of architecture ``spec``, unbuilt (building ViT-L takes most of a minute on a CPU)."""
    return _total(model_cls.layer_params(spec, num_classes))


def count_macs(model: Any) -> MacCounts:
    """MACs of one image through a built ``src.models.VisionTransformer``: its spec, classes, layers and setting."""
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"count_macs: expected a src.models.VisionTransformer, got a {type(model).__name__}")
    layers = model.layer_macs(model.spec, model.num_classes, model.ppt, model.block_fn, model.norm_layer)
    return {"total": _total(layers), "per_block": layers["blocks"]}
