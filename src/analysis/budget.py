"""Choose the PPT r schedule for a MACs budget, analytically (``src.flops``), optionally checked on data.

Search space: one r per given PP layer, each clamped as the model clamps it (at most ``(N - 1) // 2`` of the
``N`` tokens entering the block). Schedules whose MACs (:func:`src.flops.count_macs_spec`) exceed the target
are out. The criterion, a proxy for preserving accuracy:

1. the smallest largest r: tokens leave gradually, no block removes many at once. This is the paper's (and
   ToMe's) constant-r setting: the smallest constant r meeting the target. No schedule meeting the target
   has a smaller maximum (removing fewer tokens anywhere only costs more);
2. then give the slack back: the constant schedule usually undershoots the target, so, PP layer by PP
   layer from the first, r is lowered as far as the target still allows. A token given back at an early
   layer is kept through the most blocks, and the reductions that remain sit as late as possible.

Why not simply the most token-blocks (the sum over blocks of the tokens leaving each block): MACs are nearly
proportional to token-blocks, so at a fixed budget that criterion only trades on the quadratic attention
term and removes nearly everything at the first PP layer (DeiT-S at 70 %, layers 3/6/9: r = 80, 0, 0), the
opposite of what preserves accuracy.

Every reported schedule's MACs are computed exactly, so the target is always met. The minimum reachable
MACs (for the error on an impossible target) are those of the largest constant r, every block clamped.

With a dataset, the analytic choice and, for contrast, the decreasing and increasing ramps that meet the
same target (r proportional to L..1 and 1..L over the L PP layers, the smallest such scale) are evaluated
on a subset and the best top-1 wins (ties go to the analytic choice).
"""
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import configured_spec
from ..flops import count_macs_spec
from ..models import ViTSpec
from ..token_reduction import PPTSetting

__all__ = ["Schedule", "MacsModel", "parse_target", "schedule_for", "search_budget", "ppt_yaml",
           "format_candidates", "choose_schedule"]


@dataclass(frozen=True)
class MacsModel:
    """What the MACs of a schedule depend on: the architecture, the classes and the reduction policy."""
    spec: ViTSpec
    num_classes: int = 1000
    policy: str = "ppt"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "MacsModel":
        return cls(configured_spec(cfg), cfg["model"]["num_classes"], cfg["ppt"]["policy"])

    def macs(self, layers: Sequence[int] = (), r: Sequence[int] = ()) -> int:
        """MACs per image with ``r[i]`` tokens removed at ``layers[i]`` (clamped as the model does)."""
        setting = PPTSetting(r=tuple(r), layers=tuple(layers), threshold=0.0, policy=self.policy) if layers else None
        return int(count_macs_spec(self.spec, self.num_classes, setting)["total"])


@dataclass(frozen=True)
class Schedule:
    """One r schedule: ``r`` (clamped, one per PP layer in ``layers`` order), its MACs per image, the tokens
    leaving each block, how it was found (``kind``: "analytic", "decreasing", "increasing") and, when it is a
    constant r before clamping, that r (``constant``; a config can then say ``r: <int>``)."""

    layers: tuple[int, ...]
    r: tuple[int, ...]
    macs: int
    tokens: tuple[int, ...]
    kind: str = "analytic"
    constant: int | None = None

    @property
    def token_blocks(self) -> int:
        return sum(self.tokens)


def parse_target(text: str, baseline_macs: int) -> int:
    """``"0.7"`` (a fraction of the baseline's MACs, in (0, 1]) or ``"3.0G"`` / ``"2950M"`` (absolute MACs
    per image) -> MACs."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([gGmM]?)\s*", str(text))
    if not match:
        raise ValueError(f"target: expected a fraction of the baseline's MACs such as 0.7, or MACs with a G or M "
                         f"suffix such as 3.0G, got '{text}'")
    value, unit = float(match.group(1)), match.group(2).upper()
    if unit:
        macs = value * (1e9 if unit == "G" else 1e6)
        if macs <= 0:
            raise ValueError(f"target: expected positive MACs, got '{text}'")
        return int(macs)
    if not 0 < value <= 1:
        raise ValueError(f"target: a number without a unit is a fraction of the baseline's MACs and must be in "
                         f"(0, 1], got '{text}'; write absolute MACs with a G or M suffix (e.g. 3.0G)")
    return int(value * baseline_macs)


def schedule_for(model: MacsModel, layers: Sequence[int], r: Sequence[int], kind: str = "analytic") -> Schedule:
    """The (clamped) schedule of ``r`` at ``layers`` with its exact MACs."""
    r = list(r)
    setting = PPTSetting(r=tuple(r), layers=tuple(layers), threshold=0.0, policy=model.policy)
    tokens, clamped = setting.schedule(model.spec.num_tokens, model.spec.depth)
    # the setting sorts its layers; give the clamped r back in the order of `layers`
    by_block = dict(zip(setting.layers, clamped))
    r_eff = tuple(by_block[i] for i in layers)
    constant = r[0] if r and len(set(r)) == 1 else None
    return Schedule(tuple(layers), r_eff, model.macs(layers, r_eff), tokens, kind, constant)


def _constant_schedules(model: MacsModel, layers: Sequence[int]) -> list[Schedule]:
    """Constant r = 0, 1, ... until every block is clamped (larger r change nothing)."""
    out = []
    for r in range(model.spec.num_tokens + 1):
        sched = schedule_for(model, layers, [r] * len(layers))
        out.append(sched)
        if all(v < r for v in sched.r):
            break
    return out


def _ramp(model: MacsModel, layers: Sequence[int], target: int, weights: Sequence[float],
          kind: str) -> Schedule | None:
    """The smallest scale s for which r_i = round(s * weights_i) meets the target (None if none does)."""
    for s in range(1, 2 * model.spec.num_tokens + 1):
        sched = schedule_for(model, layers, [int(round(s * w)) for w in weights], kind)
        if sched.macs <= target:
            return sched
    return None


def search_budget(model: MacsModel, layers: Sequence[int], target: int) -> list[Schedule]:
    """Schedules at ``layers`` meeting ``target`` MACs: the analytic choice first (see the module docstring),
    then the decreasing and increasing ramps meeting the target, where they differ from it.

    Raises ValueError when even the most reduction the clamp allows at these layers exceeds the target.
    """
    layers = list(layers)
    if not layers:
        raise ValueError("budget: no PP layers given (--layers, or ppt.layers in the config)")
    if any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
        raise ValueError(f"budget: PP layers must be block indices, got {layers!r}")
    if sorted(layers) != layers:
        raise ValueError(f"budget: PP layers must be given in ascending order, got {layers}")
    constant = _constant_schedules(model, layers)  # also validates the layers against the depth
    lowest = min(constant, key=lambda s: s.macs)
    if target < lowest.macs:
        base = constant[0].macs
        raise ValueError(f"budget: target {target / 1e9:.4g} GMACs ({target / base:.3f} of the baseline) is below "
                         f"the minimum reachable with PP layers {layers}: {lowest.macs / 1e9:.4g} GMACs "
                         f"({lowest.macs / base:.3f}), r clamped to {list(lowest.r)}; add PP layers or use earlier "
                         f"ones")
    start = next(s for s in constant if s.macs <= target)
    best = _give_back(model, layers, target, start)
    if not any(best.r):
        return [best]  # the target allows the whole baseline: nothing to compare
    n = len(layers)
    out = [best]
    for weights, kind in (([(n - i) / n for i in range(n)], "decreasing"), ([(i + 1) / n for i in range(n)],
                                                                           "increasing")):
        ramp = _ramp(model, layers, target, weights, kind)
        if ramp is not None and all(ramp.r != s.r for s in out):
            out.append(ramp)
    return out


def _give_back(model: MacsModel, layers: Sequence[int], target: int, start: Schedule) -> Schedule:
    """Starting from ``start`` (meeting the target), lower r at each PP layer in turn, first layer first, as
    far as the target still holds. One pass suffices: the slack only shrinks, so a layer that could not be
    lowered earlier cannot be lowered later either."""
    best = start
    for i in range(len(layers)):
        while best.r[i] > 0:
            trial = schedule_for(model, layers, best.r[:i] + (best.r[i] - 1,) + best.r[i + 1:])
            if trial.macs > target:
                break
            best = trial
    return best


def ppt_yaml(sched: Schedule, threshold: float | None, prop_attn: bool, policy: str = "ppt") -> str:
    """The ``ppt:`` config block of a schedule, ready to paste into a config file."""
    if sched.constant is not None or len(set(sched.r)) == 1:
        r_text = str(sched.r[0] if sched.constant is None else sched.constant)
    else:
        r_text = "[" + ", ".join(map(str, sched.r)) + "]"
    return "\n".join(["ppt:", "  enabled: true", f"  policy: {policy}", f"  r: {r_text}",
                      "  layers: [" + ", ".join(map(str, sched.layers)) + "]",
                      f"  threshold: {'null' if threshold is None else format(threshold, 'g')}",
                      f"  prop_attn: {'true' if prop_attn else 'false'}"])


def format_candidates(candidates: Sequence[Schedule], baseline_macs: int,
                      top1: Sequence[float | None] | None = None) -> str:
    """A text table of candidate schedules (with their top-1 when measured)."""
    header = ["#", "kind", "r", "GMACs", "ratio", "final tokens", "token-blocks"] + (["top-1 (%)"] if top1 else [])
    rows = []
    for i, s in enumerate(candidates):
        row = [str(i + 1), s.kind, ",".join(map(str, s.r)), f"{s.macs / 1e9:.4f}", f"{s.macs / baseline_macs:.4f}",
               str(s.tokens[-1]), str(s.token_blocks)]
        if top1:
            row.append("-" if top1[i] is None else f"{top1[i]:.2f}")
        rows.append(row)
    widths = [max(len(line[i]) for line in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _evaluate_candidates(cfg: dict[str, Any], candidates: Sequence[Schedule], threshold: float, data: str,
                         ckpt_file: str, **eval_kwargs: Any) -> tuple[list[float], int]:
    """Top-1 of every candidate on (a subset of) ``data``, and the number of images evaluated."""
    from ..factory import build_model  # the model zoo and data pipeline only when evaluating
    from .sweep import evaluate_on

    top1, images = [], 0
    for sched in candidates:
        run_cfg = {**cfg, "ppt": {**cfg["ppt"], "enabled": True, "r": list(sched.r), "layers": list(sched.layers),
                                  "threshold": threshold}}
        result = evaluate_on(build_model(run_cfg, ckpt_file), cfg, data, desc=f"{sched.kind} r={list(sched.r)}",
                             **eval_kwargs)
        top1.append(result["top1"])
        images = result["num_images"]
    return top1, images


def choose_schedule(cfg: dict[str, Any], target: str, layers: Sequence[int], threshold: float, *,
                    data: str | None = None, ckpt_file: str | None = None, split: str = "val",
                    max_images: int = 512, batch_size: int | None = None) -> str:
    """What ``budget.py`` prints: the candidates meeting ``target`` (see :func:`parse_target`) at ``layers``,
    evaluated on ``data`` with ``ckpt_file`` when given (the best top-1 wins), and the chosen ``ppt:`` block."""
    model = MacsModel.from_config(cfg)
    baseline = model.macs()
    goal = parse_target(target, baseline)
    layers = sorted(layers)
    candidates = search_budget(model, layers, goal)
    lines = [f"{cfg['model']['name']}: baseline {baseline / 1e9:.4f} GMACs per image; target {goal / 1e9:.4f} "
             f"GMACs ({goal / baseline:.4f} of the baseline); PP layers {layers}"]
    chosen, top1 = candidates[0], None
    if data is not None and len(candidates) > 1:
        top1, images = _evaluate_candidates(cfg, candidates, threshold, data, ckpt_file, split=split,
                                            batch_size=batch_size, max_images=max_images)
        chosen = candidates[top1.index(max(top1))]  # the first, i.e. the analytic one, among equals
        lines.append(f"top-1 on {images} images of {data}/{split}:")
    lines.append(format_candidates(candidates, baseline, top1))
    if chosen.r and not any(chosen.r):
        lines.append("the target is at or above the baseline's MACs: no token reduction needed")
    ratio = chosen.macs / baseline
    lines += [f"\nchosen: {chosen.kind}, {chosen.macs / 1e9:.4f} GMACs per image, {ratio:.4f} of the baseline\n",
              f"# {chosen.macs / 1e9:.4f} GMACs per image ({ratio:.4f} of the baseline), from budget.py --target "
              f"{target}", ppt_yaml(chosen, threshold, cfg["ppt"]["prop_attn"], model.policy)]
    return "\n".join(lines)
