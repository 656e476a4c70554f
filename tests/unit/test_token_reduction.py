"""Token reduction: the functions against a plain per-image numpy reading of the algorithm (the rules the
golden outputs in tests/fixtures follow: class-attention x value-norm scores, unbiased variance, descending
score order when pruning, ToMe's even/odd bipartite matching when pooling), and the registered policies."""
import mindspore as ms
import numpy as np
import pytest

from src.token_reduction import (
    PPTSetting,
    clamp_r,
    get_policy,
    importance_scores,
    list_policies,
    pool,
    prune,
    prune_or_pool,
    score_variance,
    token_schedule,
)


def np_pool(x, size, metric, r, protected):
    """One image: ToMe bipartite matching with size-weighted averages, written as a loop."""
    m = metric / np.linalg.norm(metric, axis=-1, keepdims=True)
    a_pos, b_pos = np.arange(0, len(x), 2), np.arange(1, len(x), 2)
    sim = m[a_pos] @ m[b_pos].T
    sim[0, :] = -np.inf
    if protected == 2:
        sim[:, 0] = -np.inf
    best, dst = sim.max(axis=1), sim.argmax(axis=1)
    ranked = np.argsort(-best, kind="stable")
    merged, kept = ranked[:r], np.sort(ranked[r:])
    bx, bs = x[b_pos] * size[b_pos], size[b_pos].copy()
    for i in merged:
        bx[dst[i]] += x[a_pos[i]] * size[a_pos[i]]
        bs[dst[i]] += size[a_pos[i]]
    ax, as_ = x[a_pos[kept]], size[a_pos[kept]]
    bx = bx / bs
    if protected == 2:
        return (np.concatenate([ax[:1], bx[:1], ax[1:], bx[1:]]), np.concatenate([as_[:1], bs[:1], as_[1:], bs[1:]]))
    return np.concatenate([ax, bx]), np.concatenate([as_, bs])


def _inputs(b=3, n=17, c=8, h=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(b, n, c)).astype(np.float32)
    size = rng.integers(1, 4, size=(b, n, 1)).astype(np.float32)
    metric = rng.normal(size=(b, n, 4)).astype(np.float32)
    logits = rng.normal(size=(b, h, n, n)).astype(np.float32)
    attn = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    v = rng.normal(size=(b, h, n, c // h)).astype(np.float32)
    return x, size, metric, attn, v


@pytest.mark.parametrize("protected", [1, 2])
@pytest.mark.parametrize("n,r", [(17, 5), (16, 7), (17, 8)])  # odd/even N, and r at the clamp
def test_pool_matches_loop_reference(protected, n, r):
    x, size, metric, _, _ = _inputs(n=n)
    out_x, out_size, _ = pool(ms.Tensor(x), ms.Tensor(size), ms.Tensor(metric), r, protected)
    assert out_x.shape == (3, n - r, 8)
    for i in range(3):
        ref_x, ref_size = np_pool(x[i], size[i], metric[i], r, protected)
        np.testing.assert_allclose(out_x.asnumpy()[i], ref_x, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out_size.asnumpy()[i], ref_size)
        # protected tokens untouched (up to x * size / size rounding)
        np.testing.assert_allclose(out_x.asnumpy()[i, :protected], x[i, :protected], rtol=1e-6)


@pytest.mark.parametrize("protected", [1, 2])
def test_scores_and_prune(protected):
    x, size, _, attn, v = _inputs()
    scores = importance_scores(ms.Tensor(attn), ms.Tensor(v), protected).asnumpy()
    vnorm = np.sqrt((v ** 2).sum(axis=(1, 3)))
    raw = attn[:, :, 0, :].sum(1) * vnorm
    expect = raw[:, protected:] / raw[:, protected:].sum(-1, keepdims=True)
    np.testing.assert_allclose(scores[:, protected:], expect, rtol=1e-5)
    assert (scores[:, 0] == 2.0).all() and (protected == 1 or (scores[:, 1] == 1.5).all())
    np.testing.assert_allclose(score_variance(ms.Tensor(scores), protected).asnumpy(),
                               expect.var(axis=-1, ddof=1), rtol=1e-5)
    out_x, out_size, _ = prune(ms.Tensor(x), ms.Tensor(size), ms.Tensor(scores), 6)
    order = np.argsort(-scores, axis=-1, kind="stable")[:, :17 - 6]
    np.testing.assert_array_equal(out_x.asnumpy(), np.take_along_axis(x, order[..., None], axis=1))
    np.testing.assert_array_equal(out_size.asnumpy(), np.take_along_axis(size, order[..., None], axis=1))
    np.testing.assert_array_equal(order[:, :protected], np.tile(np.arange(protected), (3, 1)))


@pytest.mark.parametrize("protected", [1, 2])
def test_prune_or_pool_picks_per_image(protected):
    """Per image, bit for bit, what prune or pool alone gives: tokens, sizes and sources (one gather serves
    both, so a pruned image's tokens must come through the pooling arithmetic unchanged)."""
    x, size, metric, attn, v = _inputs()
    source = np.random.default_rng(1).integers(0, 2, size=(3, 17, 17)).astype(np.float32)
    t = [ms.Tensor(a) for a in (x, size, attn, v, metric)]
    svar = score_variance(importance_scores(t[2], t[3], protected), protected).asnumpy()
    threshold = float(np.median(svar))  # the lowest-variance image pools, the highest prunes
    *out, pooled, got_svar = prune_or_pool(*t, 5, threshold, protected, ms.Tensor(source))
    np.testing.assert_array_equal(pooled.asnumpy(), svar < threshold)
    assert 0 < pooled.asnumpy().sum() < 3
    by_pool = pool(t[0], t[1], t[4], 5, protected, ms.Tensor(source))
    by_prune = prune(t[0], t[1], importance_scores(t[2], t[3], protected), 5, ms.Tensor(source))
    for i, p in enumerate(pooled.asnumpy()):
        for got, want in zip(out, by_pool if p else by_prune, strict=True):
            np.testing.assert_array_equal(got.asnumpy()[i], want.asnumpy()[i])
    np.testing.assert_allclose(got_svar.asnumpy(), svar)


def test_token_schedule_and_clamp():
    assert clamp_r(197, 50) == 50 and clamp_r(97, 50) == 48 and clamp_r(3, 5) == 1
    counts, rs = token_schedule(197, 12, [3, 6, 9], 50)
    assert counts == (197,) * 3 + (147,) * 3 + (97,) * 3 + (49,) * 3 and rs == (50, 50, 48)
    counts, rs = token_schedule(197, 12, [8, 2, 5], [90, 30, 60])  # r pairs with layers as given
    assert rs == (30, 60, 53) and counts[-1] == 54
    for bad in (dict(layers=[12], r=1), dict(layers=[1, 1], r=1), dict(layers=[1], r=-1),
                dict(layers=[1, 2], r=[1])):
        with pytest.raises(ValueError):
            token_schedule(197, 12, bad["layers"], bad["r"])


# ------------------------------------------------------------------------------------------------ policies

def test_policy_registry():
    assert list_policies()[:4] == ["ppt", "prune", "pool", "keep_first"]
    assert get_policy("ppt").uses_threshold and not get_policy("pool").uses_threshold
    with pytest.raises(ValueError, match="unknown token-reduction policy 'tome'; known: ppt, prune, pool, keep_first"):
        get_policy("tome")


@pytest.mark.parametrize("policy, threshold", [("prune", 0.0), ("pool", 1e9)])
def test_prune_and_pool_policies_equal_ppt_at_the_threshold_ends(policy, threshold, golden_input, any_mode):
    """prune = ppt with threshold 0, pool = ppt with threshold 1e9, bit for bit, without the other branch.

    Four blocks with random weights (shared by both models), PP at the last three, on 48 px crops of the golden
    input (37 -> 25 -> 13 -> 7 tokens: odd counts and r clamped at the last block, as DeiT-S's 197 -> 147 -> 97
    -> 49): the full depth and 197 tokens add nothing here but graph compile time (which grows with the token
    count). Compared on the statistics path only: that the lean path gives the same logits
    is tests/unit/test_golden.py's test_mixed_case_in_graph_mode_and_lean_path_equals_stats_path."""
    from src.io.checkpoint import load_state_dict
    from src.models import PPTStats

    from ..conftest import make_mini

    x = ms.Tensor(np.ascontiguousarray(golden_input[:, :, :48, :48]))
    schedule = dict(r=12, layers=[1, 2, 3], prop_attn=True)
    only = make_mini(dict(schedule, threshold=None, policy=policy), weights=False, depth=4, img_size=48)
    ppt = make_mini(dict(schedule, threshold=threshold), weights=False, depth=4, img_size=48)
    load_state_dict(ppt, {name: p.asnumpy() for name, p in only.parameters_and_names()}, source=policy)
    logits, pooled, svar = PPTStats(only)(x)
    ppt_logits, ppt_pooled, ppt_svar = PPTStats(ppt)(x)
    assert only.tokens_per_block == (37, 25, 13, 7) and logits.asnumpy().std() > 0  # not a constant head
    np.testing.assert_array_equal(logits.asnumpy(), ppt_logits.asnumpy())
    assert (pooled.asnumpy() == (policy == "pool")).all() and (ppt_pooled.asnumpy() == (policy == "pool")).all()
    if policy == "prune":  # it computes the score, so it reports the variance ppt decides by
        np.testing.assert_array_equal(svar.asnumpy(), ppt_svar.asnumpy())


def test_keep_first_reducer_keeps_the_first_tokens():
    x = ms.Tensor(np.arange(2 * 7 * 3, dtype=np.float32).reshape(2, 7, 3))
    size = ms.Tensor(np.ones((2, 7, 1), np.float32))
    out, new_size, source, pooled, svar = get_policy("keep_first")(3, 1)(x, size, None, None, None)
    np.testing.assert_array_equal(out.asnumpy(), x.asnumpy()[:, :4])
    assert new_size.shape == (2, 4, 1) and source is None
    assert not pooled.asnumpy().any() and svar.shape == (2,)


def test_setting_normalises_and_validates():
    s = PPTSetting(r=[90, 30, 60], layers=[8, 2, 5], threshold=7e-5)
    assert (s.layers, s.r) == ((2, 5, 8), (30, 60, 90))  # r follows its layer
    assert PPTSetting.coerce(s.to_dict()) == s and PPTSetting.coerce(None) is None
    assert s.schedule(197, 12) == token_schedule(197, 12, [2, 5, 8], [30, 60, 90])
    for bad, message in ((dict(r=-1, layers=[1], threshold=0.0), "ppt r"),
                         (dict(r=1, layers=[1, 1], threshold=0.0), "distinct"),
                         (dict(r=1, layers=[1], threshold=-1.0), "ppt threshold"),
                         (dict(r=1, layers=[1], threshold=0.0, prop_attn=1), "prop_attn")):
        with pytest.raises(ValueError, match=message):
            PPTSetting(**bad)
    assert PPTSetting(r=1, layers=[1], policy="pool").threshold is None  # pool reads no threshold
