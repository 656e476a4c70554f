"""Budget search (src/analysis/budget.py): targets met, the criterion, clear failures, a pasteable ppt: block."""

import re

import pytest

from src.analysis.budget import MacsModel, parse_target, ppt_yaml, schedule_for, search_budget
from src.config import load_config
from src.models import ViTSpec

from ..conftest import macs_of
from ..unit.test_sweep import DEMO_CONFIG, TINY

DEIT_S = dict(img_size=224, patch_size=16, in_chans=3, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0,
              distilled=False, num_classes=1000)


BASE = macs_of(**DEIT_S)["total"]


MODEL = MacsModel(ViTSpec(embed_dim=384, num_heads=6), 1000)


@pytest.mark.parametrize("layers", [[3, 6, 9], [2, 5, 8, 11], [6], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
@pytest.mark.parametrize("fraction", [0.95, 0.8, 0.7, 0.6])
def test_budget_meets_the_target_with_the_smallest_constant_r_and_no_slack_left(layers, fraction):
    target = int(fraction * BASE)
    reachable = macs_of(**DEIT_S, layers=layers, r=197)["total"]  # every block clamped
    if target < reachable:
        expected = re.escape(f"minimum reachable with PP layers {layers}: {reachable / 1e9:.4g} GMACs")
        with pytest.raises(ValueError, match=expected):
            search_budget(MODEL, layers, target)
        return
    candidates = search_budget(MODEL, layers, target)
    assert all(c.macs <= target and c.macs == macs_of(**DEIT_S, layers=layers, r=list(c.r))["total"]
               for c in candidates)
    best = candidates[0]
    assert best.kind == "analytic" and [c.kind for c in candidates[1:]] == ["decreasing", "increasing"][
        :len(candidates) - 1]
    # criterion 1: the largest r is the smallest constant r meeting the target
    smallest = next(r for r in range(198) if macs_of(**DEIT_S, layers=layers, r=r)["total"] <= target)
    assert max(best.r) == smallest
    # criterion 2: the slack is given back, so removing one token fewer anywhere breaks the target
    for i, r in enumerate(best.r):
        if r > 0:
            fewer = list(best.r[:i]) + [r - 1] + list(best.r[i + 1:])
            assert macs_of(**DEIT_S, layers=layers, r=fewer)["total"] > target


def test_budget_finds_the_papers_deit_s_setting():
    """The paper's DeiT-S PPT (r=50 at blocks 3, 6, 9; 2.94 GMACs) is what 64 % of the MACs buys."""
    best = search_budget(MODEL, [3, 6, 9], int(0.64 * BASE))[0]
    assert best.r == (50, 50, 48) and best.tokens[-1] == 49 and round(best.macs / 1e9, 2) == 2.95
    assert "\n  r: 50\n" in ppt_yaml(best, 7e-5, True)  # the constant r, clamped at block 9 by the model


def test_target_at_or_above_the_baseline_needs_no_reduction():
    assert [(s.r, s.macs) for s in search_budget(MODEL, [3, 6, 9], BASE)] == [((0, 0, 0), BASE)]


def test_parse_target():
    assert parse_target("0.7", 1000) == 700 and parse_target("3.0G", 1) == 3_000_000_000
    assert parse_target("2950m", 1) == 2_950_000_000 and parse_target("1", 1000) == 1000
    for bad, message in (("7", r"must be in \(0, 1\], got '7'"), ("0", "must be in"), ("3GB", "expected a fraction"),
                         ("-0.5", "expected a fraction"), ("0G", "expected positive MACs")):
        with pytest.raises(ValueError, match=message):
            parse_target(bad, 1000)


def test_bad_layers_fail_clearly():
    with pytest.raises(ValueError, match="no PP layers given"):
        search_budget(MODEL, [], BASE // 2)
    with pytest.raises(ValueError, match=r"PP layers \[3, 12\] must be distinct block indices in \[0, 12\)"):
        search_budget(MODEL, [3, 12], BASE // 2)


def test_printed_ppt_block_loads_as_config(tmp_path):
    cfg = load_config(DEMO_CONFIG, TINY)
    model = MacsModel.from_config(cfg)
    assert model == MacsModel(ViTSpec(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=3), 3, "ppt")
    sched = schedule_for(model, [1, 2], [5, 3])
    text = DEMO_CONFIG.read_text()
    text = text[:text.index("\nppt:")] + "\n" + ppt_yaml(sched, 6.6e-4, True) + text[text.index("\ndata:"):]
    (tmp_path / "c.yaml").write_text(text)
    ppt = load_config(tmp_path / "c.yaml")["ppt"]
    assert ppt == dict(enabled=True, policy="ppt", r=[5, 3], layers=[1, 2], threshold=6.6e-4, prop_attn=True)
    assert "  r: 4\n" in ppt_yaml(schedule_for(model, [1, 2], [4, 4]), 0.0, False)

