"""The port computes what the official PyTorch PPT code computes (tests/fixtures/ppt_reference.*)."""
import mindspore as ms
import numpy as np
import pytest

from src.models import PPTStats
from src.token_reduction import PPTSetting

from ..conftest import make_mini

CASES = ["baseline", "prune_all", "pool_all", "mixed", "mixed_schedule"]


def golden_ppt(case_meta):
    return dict(r=case_meta["r"], layers=case_meta["layers"], threshold=case_meta["threshold"], prop_attn=True)


def assert_matches_golden(model, x, case, golden):
    """``model`` (built with the case's setting) gives the reference logits (1e-4), token counts, and every
    per-image decision and score variance of ``case``."""
    logits, pooled, svar = PPTStats(model)(ms.Tensor(x))
    return assert_outputs_match_golden(model, logits, pooled, svar, case, golden)


def assert_outputs_match_golden(model, logits, pooled, svar, case, golden):
    """What :func:`assert_matches_golden` checks, on outputs already computed (e.g. by a traced graph)."""
    meta, ref = golden
    c = meta["cases"][case]
    np.testing.assert_allclose(logits.asnumpy(), ref[f"{case}/logits"], atol=1e-4, rtol=0)
    plain = [model.spec.num_tokens] * model.spec.depth  # a case without token counts is the plain model
    assert model.tokens_per_block == tuple(c["tokens_after_each_block"] or plain)
    assert model.ppt_layers == tuple(sorted(c["layers"]))
    assert pooled.shape == (8, len(c["layers"])) and svar.dtype == ms.float32
    for j, layer in enumerate(model.ppt_layers):
        np.testing.assert_array_equal(pooled.asnumpy()[:, j], ref[f"{case}/pooled_layer{layer}"])
        np.testing.assert_allclose(svar.asnumpy()[:, j], ref[f"{case}/svar_layer{layer}"], rtol=1e-4)
    return logits.asnumpy()


# Graph mode by default for "mixed" only (test_mixed_case_in_graph_mode_and_lean_path_equals_stats_path): it holds
# both branches, so the other cases compile the same code again (~20 s each); they run with -m slow.
# mixed_schedule's outputs are also checked on the traced graph (tests/unit/test_vit.py).
@pytest.mark.parametrize("case, any_mode", [(c, "pynative") for c in CASES]
                         + [pytest.param(c, "graph", marks=pytest.mark.slow) for c in CASES if c != "mixed"],
                         indirect=["any_mode"])
def test_golden_case(case, golden, golden_input, any_mode):
    assert_matches_golden(make_mini(golden_ppt(golden[0]["cases"][case])), golden_input, case, golden)


def test_mixed_batch_really_mixes(golden):
    """The mixed cases must exercise prune and pool in one batch, or they prove nothing about masking."""
    _, ref = golden
    for key in ("mixed/pooled_layer3", "mixed_schedule/pooled_layer2"):
        assert 0 < ref[key].sum() < ref[key].size


@pytest.mark.parametrize("case", ["mixed_schedule", "pool_all"])
def test_token_counts_after_each_block(case, golden, golden_input):
    """Run the blocks one by one and check the actual tensor shapes, not just the static schedule."""
    meta, _ = golden
    c = meta["cases"][case]
    model = make_mini(golden_ppt(c))
    x = model._embed(ms.Tensor(golden_input))
    size = ms.ops.ones((x.shape[0], x.shape[1], 1), ms.float32)
    counts = []
    for blk in model.blocks:
        x, size, _, _, _ = blk(x, size)
        counts.append(x.shape[1])
        if case == "pool_all":  # pooling conserves patches: the sizes always add up to all 197 tokens
            np.testing.assert_allclose(size.asnumpy().sum(axis=(1, 2)), 197.0)
    assert counts == c["tokens_after_each_block"]


def test_mixed_case_in_graph_mode_and_lean_path_equals_stats_path(golden_mixed_model, golden, golden_input,
                                                                   graph_mode):
    """The golden mixed case on the statistics path, and the lean path (what inference runs) bit for bit."""
    model = golden_mixed_model
    assert model.ppt == PPTSetting(**golden_ppt(golden[0]["cases"]["mixed"]))
    with_stats = assert_matches_golden(model, golden_input, "mixed", golden)
    np.testing.assert_array_equal(model(ms.Tensor(golden_input)).asnumpy(), with_stats)
