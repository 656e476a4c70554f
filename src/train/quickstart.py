"""The end of a training run: the trained weights evaluated with and without PPT, side by side."""
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..evaluation import evaluate, format_comparison
from ..factory import build_model
from .engine import val_dataset

__all__ = ["compare_with_baseline"]


def compare_with_baseline(cfg: Mapping[str, Any], weights: Path, ppt_result: dict[str, Any],
                          progress: bool = True) -> str:
    """Evaluate ``weights`` without PPT on the validation split and return the comparison table against
    ``ppt_result`` (the PPT model's validation of the same weights)."""
    baseline = build_model(dict(cfg), ckpt_file=str(weights), with_ppt=False)
    val_set = val_dataset(cfg)
    base_result = evaluate(baseline, val_set, progress=progress, desc="baseline")
    return format_comparison({"baseline (no PPT)": base_result, "PPT": ppt_result})
