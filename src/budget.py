"""Choose the PPT r schedule for a MACs budget, analytically (``src.flops``), optionally checked on data.

Search space: one r per given PP layer, each clamped as the model clamps it (at most ``(N - 1) // 2`` of the
``N`` tokens entering the block). Schedules whose MACs (:func:`src.flops.count_macs_arch`) exceed the target
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
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .config import model_kwargs
from .flops import count_macs_arch
from .models import model_defaults
from .token_reduction import token_schedule

__all__ = ["Schedule", "model_arch", "parse_target", "schedule_for", "search_budget",
           "ppt_yaml", "format_candidates"]

_ARCH_KEYS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio", "distilled")


@dataclass(frozen=True)
class Schedule:
    """One r schedule: ``r`` (clamped, one per PP layer in ``layers`` order), its MACs per image, the tokens
    leaving each block, how it was found (``kind``: "analytic", "decreasing", "increasing") and, when it is a
    constant r before clamping, that r (``constant``; a config can then say ``r: <int>``)."""

    layers: Tuple[int, ...]
    r: Tuple[int, ...]
    macs: int
    tokens: Tuple[int, ...]
    kind: str = "analytic"
    constant: Optional[int] = None

    @property
    def token_blocks(self) -> int:
        return sum(self.tokens)


def model_arch(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The keyword arguments of :func:`src.flops.count_macs_arch` describing the configured model (no PPT)."""
    kwargs = model_kwargs(cfg)
    arch = model_defaults(kwargs["name"])
    arch.update({k: v for k, v in kwargs.items() if k in arch})
    out = {k: arch[k] for k in _ARCH_KEYS}
    out["num_classes"] = kwargs["num_classes"]
    return out


def parse_target(text: str, baseline_macs: int) -> int:
    """``"0.7"`` (a fraction of the baseline's MACs, in (0, 1]) or ``"3.0G"`` / ``"2950M"`` (absolute MACs
    per image) -> MACs."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([gGmM]?)\s*", str(text))
    if not match:
        raise ValueError(f"--target: expected a fraction of the baseline's MACs such as 0.7, or MACs with a G or M "
                         f"suffix such as 3.0G, got '{text}'")
    value, unit = float(match.group(1)), match.group(2).upper()
    if unit:
        macs = value * (1e9 if unit == "G" else 1e6)
        if macs <= 0:
            raise ValueError(f"--target: expected positive MACs, got '{text}'")
        return int(macs)
    if not 0 < value <= 1:
        raise ValueError(f"--target: a number without a unit is a fraction of the baseline's MACs and must be in "
                         f"(0, 1], got '{text}'; write absolute MACs with a G or M suffix (e.g. 3.0G)")
    return int(value * baseline_macs)


def _num_tokens(arch: Dict[str, Any]) -> int:
    return (arch["img_size"] // arch["patch_size"]) ** 2 + (2 if arch["distilled"] else 1)


def schedule_for(arch: Dict[str, Any], layers: Sequence[int], r: Sequence[int], kind: str = "analytic") -> Schedule:
    """The (clamped) schedule of ``r`` at ``layers`` with its exact MACs."""
    r = list(r)
    tokens, clamped = token_schedule(_num_tokens(arch), arch["depth"], list(layers), list(r))
    # token_schedule returns the clamped r in block order; give them back in the order of `layers`
    by_block = dict(zip(sorted(layers), clamped))
    r_eff = tuple(by_block[i] for i in layers)
    macs = count_macs_arch(**arch, layers=list(layers), r=list(r_eff))["total"]
    constant = r[0] if r and len(set(r)) == 1 else None
    return Schedule(tuple(layers), r_eff, int(macs), tokens, kind, constant)


def _constant_schedules(arch: Dict[str, Any], layers: Sequence[int]) -> List[Schedule]:
    """Constant r = 0, 1, ... until every block is clamped (larger r change nothing)."""
    out = []
    for r in range(_num_tokens(arch) + 1):
        sched = schedule_for(arch, layers, [r] * len(layers))
        out.append(sched)
        if all(v < r for v in sched.r):
            break
    return out


def _ramp(arch: Dict[str, Any], layers: Sequence[int], target: int, weights: Sequence[float],
          kind: str) -> Optional[Schedule]:
    """The smallest scale s for which r_i = round(s * weights_i) meets the target (None if none does)."""
    for s in range(1, 2 * _num_tokens(arch) + 1):
        sched = schedule_for(arch, layers, [int(round(s * w)) for w in weights], kind)
        if sched.macs <= target:
            return sched
    return None


def search_budget(arch: Dict[str, Any], layers: Sequence[int], target: int) -> List[Schedule]:
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
    constant = _constant_schedules(arch, layers)  # also validates the layers against the depth
    lowest = min(constant, key=lambda s: s.macs)
    if target < lowest.macs:
        base = constant[0].macs
        raise ValueError(f"budget: target {target / 1e9:.4g} GMACs ({target / base:.3f} of the baseline) is below "
                         f"the minimum reachable with PP layers {layers}: {lowest.macs / 1e9:.4g} GMACs "
                         f"({lowest.macs / base:.3f}), r clamped to {list(lowest.r)}; add PP layers or use earlier ones")
    start = next(s for s in constant if s.macs <= target)
    best = _give_back(arch, layers, target, start)
    if not any(best.r):
        return [best]  # the target allows the whole baseline: nothing to compare
    n = len(layers)
    out = [best]
    for weights, kind in (([(n - i) / n for i in range(n)], "decreasing"), ([(i + 1) / n for i in range(n)],
                                                                           "increasing")):
        ramp = _ramp(arch, layers, target, weights, kind)
        if ramp is not None and all(ramp.r != s.r for s in out):
            out.append(ramp)
    return out


def _give_back(arch: Dict[str, Any], layers: Sequence[int], target: int, start: Schedule) -> Schedule:
    """Starting from ``start`` (meeting the target), lower r at each PP layer in turn, first layer first, as
    far as the target still holds. One pass suffices: the slack only shrinks, so a layer that could not be
    lowered earlier cannot be lowered later either."""
    best = start
    for i in range(len(layers)):
        while best.r[i] > 0:
            trial = schedule_for(arch, layers, best.r[:i] + (best.r[i] - 1,) + best.r[i + 1:])
            if trial.macs > target:
                break
            best = trial
    return best


def ppt_yaml(sched: Schedule, threshold: float, prop_attn: bool) -> str:
    """The ``ppt:`` config block of a schedule, ready to paste into a config file."""
    if sched.constant is not None or len(set(sched.r)) == 1:
        r_text = str(sched.r[0] if sched.constant is None else sched.constant)
    else:
        r_text = "[" + ", ".join(map(str, sched.r)) + "]"
    return "\n".join(["ppt:", "  enabled: true", f"  r: {r_text}",
                      "  layers: [" + ", ".join(map(str, sched.layers)) + "]",
                      f"  threshold: {threshold:g}", f"  prop_attn: {'true' if prop_attn else 'false'}"])


def format_candidates(candidates: Sequence[Schedule], baseline_macs: int,
                      top1: Optional[Sequence[Optional[float]]] = None) -> str:
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
