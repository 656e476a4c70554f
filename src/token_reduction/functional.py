"""PPT token reduction: prune inattentive tokens or pool duplicate ones, per image, with static shapes.

Pure functions on tensors. Every PP block plans both branches for the whole batch (which rows to keep and
which to merge: small index tensors), picks one plan per image with a mask and then moves the tokens once:
both end with exactly ``N - r`` tokens, so shapes never depend on the data (graph mode, MindIR export).
Scores, their variance and the decision are float32 whatever the activations' dtype, because the paper's
threshold (7e-5) is below float16's normal range.

Token order follows the official code exactly (the next PP block splits tokens by position):
pruning keeps tokens in descending score order; pooling (ToMe bipartite matching) outputs the unmerged
even-position tokens in position order, then all odd-position tokens in position order.
Protected tokens (class token, and the distillation token of distilled DeiTs) are never removed.
"""
from collections.abc import Sequence

import mindspore as ms
from mindspore import Tensor, ops

_CLS_SCORE = 2.0  # above any normalised score: the class token always ranks first
_DIST_SCORE = 1.5  # second, so a distillation token stays at index 1


def clamp_r(num_tokens: int, r: int) -> int:
    """At most ``(N - 1) // 2`` tokens can be merged (every even-position token but the class token)."""
    return min(r, (num_tokens - 1) // 2)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML true must not pass as r = 1


def r_per_layer(r: int | Sequence[int], layers: Sequence[int]) -> tuple[int, ...]:
    """One r per PP layer: ``r`` is one int >= 0 for every layer or one per entry of ``layers``, in its order."""
    if _is_int(r) and r >= 0:
        return (r,) * len(layers)
    if isinstance(r, Sequence) and not isinstance(r, str) and len(r) == len(layers) and \
            all(_is_int(v) and v >= 0 for v in r):
        return tuple(r)
    raise ValueError(f"expected an int >= 0 or one per entry of the PP layers {list(layers)} "
                     f"({len(layers)} values), got {r!r}")


def token_schedule(num_tokens: int, depth: int, layers: Sequence[int],
                   r: int | Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Token count after each block, and the clamped r of each PP block (in ``sorted(layers)`` order).

    ``r`` is one int for all PP blocks or one value per entry of ``layers`` (see :func:`r_per_layer`).
    """
    layers = list(layers)
    try:
        rs = r_per_layer(r, layers)
    except ValueError as e:
        raise ValueError(f"r: {e}") from None
    if len(set(layers)) != len(layers) or any(not 0 <= i < depth for i in layers):
        raise ValueError(f"PP layers {layers} must be distinct block indices in [0, {depth})")
    r_at = dict(zip(layers, rs))
    counts, clamped = [], []
    n = num_tokens
    for i in range(depth):
        if i in r_at:
            ri = clamp_r(n, r_at[i])
            clamped.append(ri)
            n -= ri
        counts.append(n)
    return tuple(counts), tuple(clamped)


def as_dtype(t: Tensor, dtype: ms.Type) -> Tensor:
    """``t`` in ``dtype``, without a Cast op when it already is: the dtype is known when the graph is built, and
    a same-type Cast still runs as a kernel on CPU (a fixed cost that shows at batch 1)."""
    return t if t.dtype == dtype else t.astype(dtype)


def _sum_last(t: Tensor) -> Tensor:
    """Sum over the last axis, keeping it (size 1), as a matmul: ~6x faster than ReduceSum on CPU."""
    return ops.matmul(t, ops.ones((t.shape[-1], 1), t.dtype))


def importance_scores(attn: Tensor, v: Tensor, num_protected: int) -> Tensor:
    """Class-attention x value-norm score of every token, normalised over the unprotected tokens.

    attn: ``[B, H, N, N]`` softmax attention; v: ``[B, H, N, D]``. Returns float32 ``[B, N]``; protected
    tokens get scores above every other token so sorting keeps them in front.
    """
    attn = as_dtype(attn, ms.float32)
    v = as_dtype(v, ms.float32)
    cls_attn = attn[:, :, 0, :].sum(axis=1)  # [B, N]
    v_norm = ops.sqrt(_sum_last(v * v).sum(axis=1).squeeze(-1))  # L2 norm over all heads' values
    s = (cls_attn * v_norm)[:, num_protected:]
    s = s / s.sum(axis=-1, keepdims=True)
    head = [ops.full_like(s[:, :1], _CLS_SCORE)]
    if num_protected == 2:
        head.append(ops.full_like(s[:, :1], _DIST_SCORE))
    return ops.concat(head + [s], axis=1)


def score_variance(scores: Tensor, num_protected: int) -> Tensor:
    """Unbiased (ddof=1) variance of the unprotected tokens' scores, ``[B]`` float32."""
    return scores[:, num_protected:].var(axis=-1, ddof=1)


def _take(x: Tensor, idx: Tensor) -> Tensor:
    """``x[b, idx[b, i], :]`` for ``x: [B, N, C]``, ``idx: [B, K]``.

    A row gather on the flattened batch: ~10x faster on CPU than ``gather_elements`` with indices broadcast
    to ``[B, K, C]``, and unlike ``gather(..., batch_dims=1)`` it exports to ONNX correctly.
    """
    b, n, c = x.shape
    # Built while the graph is compiled (shapes are static): no arange/mul kernels per call.
    offsets = Tensor([[i * n] for i in range(b)], ms.int32)
    rows = (as_dtype(idx, ms.int32) + offsets).reshape(-1)
    return ops.gather(x.reshape(b * n, c), rows, 0).reshape(b, idx.shape[1], c)


def prune(x: Tensor, size: Tensor, scores: Tensor, r: int,
          source: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Keep the ``N - r`` highest-scoring tokens, in descending score order."""
    _, order = ops.topk(scores, x.shape[1] - r, sorted=True)
    return _take(x, order), _take(size, order), None if source is None else _take(source, order)


def _alternate(t: Tensor) -> tuple[Tensor, Tensor]:
    """Even- and odd-position tokens of ``t: [B, N, ...]``, as ``t[:, ::2]``, ``t[:, 1::2]``.

    A gather instead of a strided slice: MindSpore's CPU StridedSliceGrad kernel fails ("input memory out of
    bounds") for a step on axis 1 of a 3-D tensor, which would make PPT untrainable on CPU.
    """
    n = t.shape[1]
    even = Tensor(list(range(0, n, 2)), ms.int32)
    odd = Tensor(list(range(1, n, 2)), ms.int32)
    return ops.gather(t, even, 1), ops.gather(t, odd, 1)


def _merge_plan(metric: Tensor, r: int, num_protected: int) -> tuple[Tensor, Tensor, Tensor]:
    """ToMe bipartite matching on the cosine similarity of ``metric``: even-position tokens (A) against
    odd-position ones (B), as a plan on the input token positions. Returns the ``N - r`` rows to gather (the
    kept A tokens in position order, then every B token; a distillation token moved to index 1, right after
    the class token), the ``r`` merged A rows, and the ``[B, N - r, r]`` one-hot matrix that adds each merged
    row into the output row of its B partner."""
    metric = as_dtype(metric, ms.float32)
    metric = metric / ops.sqrt(_sum_last(metric * metric))
    a, b = _alternate(metric)
    sim = ops.matmul(a, b.swapaxes(1, 2))  # [B, Na, Nb]
    batch, na, nb = sim.shape
    # The class token (first A token) may not be merged; a distillation token (first B) takes no merge.
    neg_inf = Tensor(float("-inf"), ms.float32)
    sim = ops.where(Tensor([[[i == 0] for i in range(na)]], ms.bool_), neg_inf, sim)
    if num_protected == 2:
        sim = ops.where(Tensor([[[j == 0 for j in range(nb)]]], ms.bool_), neg_inf, sim)
    best_sim, best_dst = sim.max(axis=-1, return_indices=True)  # [B, Na]
    _, ranked = ops.sort(best_sim, axis=-1, descending=True)
    src_idx, unm_idx = as_dtype(ranked[:, :r], ms.int32), ranked[:, r:]
    unm_idx, _ = ops.sort(unm_idx.astype(ms.float32), axis=-1)  # position order (exact for N < 2**24)
    kept_a = as_dtype(unm_idx, ms.int32) * 2  # A token i sits at position 2 i
    all_b = Tensor([list(range(1, 2 * nb, 2))] * batch, ms.int32)  # compile-time constant, like the offsets
    if num_protected == 2:
        rows = ops.concat([kept_a[:, :1], all_b[:, :1], kept_a[:, 1:], all_b[:, 1:]], axis=1)
    else:
        rows = ops.concat([kept_a, all_b], axis=1)
    # B token j lands in output row (Na - r) + j; the distillation token (j = 0, row 1) never receives a merge.
    dst_row = ops.gather_elements(as_dtype(best_dst, ms.int32), 1, src_idx) + (na - r)
    # A one-hot assignment matmul instead of a scatter: exportable (no ScatterElements) and deterministic.
    # Built as [B, N - r, r] directly (no transpose); the output positions are a compile-time constant.
    positions = Tensor([[[i] for i in range(na - r + nb)]], ms.int32)
    assign_t = (positions == dst_row.expand_dims(1)).astype(ms.float32)
    return rows, src_idx * 2, assign_t


def _gather_merge(x: Tensor, size: Tensor, rows: Tensor, merged_rows: Tensor, assign_t: Tensor,
                  weigh: Tensor | None, source: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Carry out a plan of :func:`_merge_plan`: gather ``rows`` and add the size-weighted ``merged_rows`` into
    their partners, ``(x * size + merged x * size) / (size + merged size)``. With ``weigh`` (``[B, 1, 1]``
    bool), images where it is False take their rows as they are (their ``assign_t`` must be all zeros):
    ``(x * 1 + 0) / 1`` is exactly ``x``, so one gather serves pruned and pooled images alike."""
    x32 = as_dtype(x, ms.float32)
    kept, kept_size = _take(x32, rows), _take(size, rows)
    merged_size = _take(size, merged_rows)
    new_size = kept_size + ops.matmul(assign_t, merged_size)
    merged = ops.matmul(assign_t, _take(x32, merged_rows) * merged_size)
    if weigh is None:
        out = (kept * kept_size + merged) / new_size
    else:
        one = Tensor(1.0, ms.float32)
        out = (kept * ops.where(weigh, kept_size, one) + merged) / ops.where(weigh, new_size, one)
    new_source = None if source is None else _take(source, rows) + ops.matmul(assign_t, _take(source, merged_rows))
    return as_dtype(out, x.dtype), new_size, new_source


def pool(x: Tensor, size: Tensor, metric: Tensor, r: int, num_protected: int,
         source: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Merge ``r`` even-position tokens into their most similar odd-position token by size-weighted average.

    x: ``[B, N, C]``, size: ``[B, N, 1]`` float32, metric: ``[B, N, D]``; ``source`` (optional, ``[B, N, P]``
    float32) marks which original patches each token stands for, and merges by union."""
    return _gather_merge(x, size, *_merge_plan(metric, r, num_protected), None, source)


def prune_or_pool(x: Tensor, size: Tensor, attn: Tensor, v: Tensor, metric: Tensor, r: int, threshold: float | Tensor,
                  num_protected: int, source: Tensor | None = None):
    """One PP step: decide per image by score variance, then prune or pool ``r`` tokens. ``threshold`` is a
    number, or a float32 scalar tensor (a Parameter, so one compiled graph serves every threshold).

    Returns ``(x, size, source, pooled, svar)``: ``source`` is None unless given; ``pooled`` ``[B]`` bool
    is True for pooled images; ``svar`` ``[B]`` float32 is the score variance that decided it.
    """
    size = as_dtype(size, ms.float32)  # AMP O2 casts the blocks' float inputs, size included, to float16
    scores = importance_scores(attn, v, num_protected)
    svar = score_variance(scores, num_protected)
    pooled = svar < threshold
    # Both branches as plans (small index tensors), chosen per image; the tokens are then moved once.
    _, order = ops.topk(scores, x.shape[1] - r, sorted=True)
    rows, merged_rows, assign_t = _merge_plan(metric, r, num_protected)
    rows = ops.where(pooled.reshape(-1, 1), rows, as_dtype(order, ms.int32))
    choose = pooled.reshape(-1, 1, 1)
    assign_t = assign_t * choose.astype(ms.float32)  # a pruned image merges nothing
    x, size, source = _gather_merge(x, size, rows, merged_rows, assign_t, choose, source)
    return x, size, source, pooled, svar
