"""Choose the PPT threshold (and, for a MACs budget, the r schedule) from a few hundred images, without labels.

The threshold does not change the MACs (a ``ppt`` PP block computes both branches), so at a fixed r schedule
it is free accuracy. Without labels the criterion is agreement with the same weights without token
reduction, on the same images:

- ``agreement``: the share of images (%) whose top-1 class is the unreduced model's;
- ``kl``: the mean KL divergence of the reduced model's softmax from the unreduced one,
  ``KL(p_unreduced || p_reduced) = sum_c p_u(c) (log p_u(c) - log p_r(c))`` (0 = the same distribution).

Rule: the highest agreement wins; equal agreements go to the lowest KL (a continuous tie-break), then to the
smaller threshold. When the folder has class folders matching the model's classes, top-1 is reported for every
candidate too, so that one sees whether agreement tracks accuracy; it never picks the winner.

Candidates (default): prune only (threshold 0), pool only (1e9, above every variance), the config's threshold,
and the 10 %, 20 %, ..., 90 % quantiles of the score variances every PP block measures on these images when
pruning only (rounded to 3 significant digits, so the printed threshold is the one evaluated). The first PP
block's variances do not depend on the threshold; a later block's do (its tokens depend on the earlier
decisions), and its quantiles cover the range where that block's decisions change, which the first block's
alone would miss (later blocks see fewer tokens, hence larger variances). With a MACs target, the r schedule
is first the analytic choice of :func:`src.analysis.budget.search_budget`, then the threshold is calibrated for it.

One compile for every candidate: the PP blocks' reducers are swapped for :class:`TunablePPTReducer`, whose
threshold is a Parameter set with ``set_data`` between candidates (the swap happens after the weights are
loaded strictly and the model is never saved, so checkpoint keys stay as they are). The unreduced model is
the second (and last) graph. Images are decoded once and held in memory (about 0.6 MB per 224 px image).
"""
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mindspore import Tensor

from ..data import class_folders, collect_images, resolve_data_root, scan_image_folder
from ..deploy.cell import CellPredictor
from ..deploy.inference import load_images, predict, preprocess_from_config
from ..evaluation import format_table
from ..factory import build_model
from ..flops import count_macs
from ..models import PPTStats, VisionTransformer
from ..token_reduction import TunablePPTReducer, r_per_layer
from .budget import MacsModel, Schedule, parse_target, ppt_yaml, schedule_for, search_budget

__all__ = ["CalibrationImages", "load_calibration_images", "tunable_reducers", "default_thresholds",
           "agreement_metrics", "calibrate", "format_calibration", "POOL_ONLY", "RULE"]

POOL_ONLY = 1e9  # the project's pool-only threshold (above any score variance)
QUANTILES = tuple(q / 10 for q in range(1, 10))
RULE = "highest top-1 agreement with the unreduced model, then lowest KL, then the smaller threshold"


@dataclass(frozen=True)
class CalibrationImages:
    """Preprocessed images ``[N, 3, H, W]`` float32, their labels (None without usable class folders), the
    folder they came from, what the labels are (``labels_note``) and the files skipped as unreadable."""
    images: np.ndarray
    labels: np.ndarray | None
    folder: Path
    num_files: int
    labels_note: str
    skipped: tuple[tuple[str, str], ...] = ()


def _files(folder: Path, num_classes: int) -> tuple[list[tuple[Path, int | None]], str]:
    """Every image file of ``folder`` with its label when the folder is an ImageNet-layout split of the
    model's classes, else without (searched recursively); and a note saying which."""
    classes = class_folders(folder)
    if classes and len(classes) == num_classes:
        scan = scan_image_folder(folder)
        return list(scan.samples), f"labelled by its {len(classes)} class folders"
    note = "unlabelled" + (f" ({len(classes)} sub-folders, the model has {num_classes} classes)" if classes else "")
    return [(p, None) for p in collect_images([folder])], note


def load_calibration_images(cfg: Mapping[str, Any], data: str, split: str = "val",
                            max_images: int = 512) -> CalibrationImages:
    """Up to ``max_images`` images of ``<data>/<split>`` (or of ``data`` itself when it has no ``split``
    folder; ``demo`` is the built-in set), a random subset seeded by the config's seed when there are more,
    preprocessed as the config's evaluation does. Unreadable files are skipped (and listed); none readable is
    an error."""
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise ValueError(f"calibrate: max_images must be an int >= 1, got {max_images!r}")
    root = resolve_data_root(data)
    folder = root / split if (root / split).is_dir() else root
    files, note = _files(folder, cfg["model"]["num_classes"])
    order = np.random.default_rng(cfg["seed"]).permutation(len(files)) if len(files) > max_images else \
        range(len(files))
    pre = preprocess_from_config(cfg)
    images, labels, skipped = [], [], []
    for i in order:
        path, label = files[i]
        try:
            images.append(load_images([path], pre)[0])
        except (OSError, ValueError) as e:
            skipped.append((str(path), str(e)))
            continue
        labels.append(label)
        if len(images) == max_images:
            break
    if not images:
        raise ValueError(f"{folder}: none of its {len(files)} image files could be read (first: {skipped[0][1]})")
    has_labels = labels[0] is not None
    return CalibrationImages(np.stack(images), np.asarray(labels, np.int64) if has_labels else None, folder,
                             len(files), note, tuple(skipped))


def tunable_reducers(model: VisionTransformer) -> list[TunablePPTReducer]:
    """Swap the ``ppt`` reducers of ``model`` (weights already loaded) for tunable ones; returns them in block
    order. ``set_threshold`` on all of them changes the model's threshold without recompiling."""
    out = []
    for i, blk in enumerate(model.blocks):
        if blk.reduces:
            if type(blk.reducer).name != "ppt":
                raise ValueError(f"calibrate: PP block {i} uses the '{type(blk.reducer).name}' policy; only the "
                                 f"ppt policy has a threshold")
            blk.reducer = TunablePPTReducer.from_reducer(blk.reducer)
            blk.reducer.runtime_threshold.name = f"blocks.{i}.reducer.runtime_threshold"  # unique, as the model's
            out.append(blk.reducer)
    return out


def default_thresholds(svar: np.ndarray, config_threshold: float | None) -> list[float]:
    """Prune only (0), the :data:`QUANTILES` of the score variances ``svar`` ``[N, L]`` of every PP block (3
    significant digits), pool only (:data:`POOL_ONLY`) and the config's threshold, sorted, without repeats."""
    quantiles = np.quantile(svar.astype(np.float64), QUANTILES, axis=0).ravel()
    grid = {0.0, POOL_ONLY} | {float(f"{q:.3g}") for q in quantiles}
    if config_threshold is not None:
        grid.add(float(config_threshold))
    return sorted(grid)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def agreement_metrics(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """``agreement`` (% of images with the reference's top-1 class), ``kl`` (mean ``KL(softmax(reference) ||
    softmax(logits))``, float64) and ``top1`` (%, None without labels)."""
    ref_log, log = _log_softmax(reference), _log_softmax(logits)
    kl = float((np.exp(ref_log) * (ref_log - log)).sum(axis=1).mean())
    pred = logits.argmax(axis=1)
    agreement = 100.0 * float((pred == reference.argmax(axis=1)).mean())
    top1 = None if labels is None else 100.0 * float((pred == labels).mean())
    return {"agreement": agreement, "kl": max(kl, 0.0), "top1": top1}


class _StatsPredictor:
    """``PPTStats`` of a model as a predictor of :func:`src.deploy.inference.predict`: ``(logits, pooled, svar)``."""

    def __init__(self, stats: PPTStats, batch_size: int):
        self.stats, self.batch_size = stats, batch_size

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(o.asnumpy() for o in self.stats(Tensor(batch)))


def _check_thresholds(thresholds: Sequence[float]) -> list[float]:
    bad = [t for t in thresholds if isinstance(t, bool) or not isinstance(t, (int, float)) or not t >= 0
           or math.isinf(t)]
    if not thresholds or bad:
        raise ValueError(f"calibrate: thresholds must be finite numbers >= 0 (score variances), got "
                         f"{list(thresholds) if not bad else bad[0]!r}")
    return sorted({float(t) for t in thresholds})


def _schedule(cfg: Mapping[str, Any], target: str | None) -> tuple[Schedule, int]:
    """The r schedule to calibrate (the config's, or the budget search's analytic choice for ``target``) and
    the baseline's MACs."""
    ppt = cfg["ppt"]
    if not ppt["enabled"]:
        raise ValueError("calibrate: the config has ppt.enabled: false; a threshold is calibrated for a PPT "
                         "setting (r and layers)")
    if ppt["policy"] != "ppt":
        raise ValueError(f"calibrate: the config's ppt.policy is '{ppt['policy']}'; only the ppt policy has a "
                         f"threshold")
    macs = MacsModel.from_config(cfg)
    layers = list(ppt["layers"])
    if target is None:
        sched = schedule_for(macs, layers, r_per_layer(ppt["r"], layers))
    else:
        sched = search_budget(macs, layers, parse_target(target, macs.macs()))[0]
    if not any(sched.r):
        raise ValueError(f"calibrate: the r schedule {list(sched.r)} at PP layers {layers} removes no token, so "
                         f"there is no threshold to calibrate")
    return sched, macs.macs()


def _run_candidates(model: VisionTransformer, images: CalibrationImages, thresholds: Sequence[float] | None,
                    config_threshold: float | None, batch_size: int,
                    reference: np.ndarray) -> tuple[list[dict[str, Any]], int]:
    """One row per candidate threshold (the default grid when ``thresholds`` is None) and the number of graphs
    compiled for all of them (1 in graph mode, 0 in PyNative)."""
    reducers = tunable_reducers(model)
    stats = PPTStats(model)
    model.set_train(False)
    runner = _StatsPredictor(stats, batch_size)
    measured: dict[float, tuple[np.ndarray, ...]] = {}

    def run(t: float) -> tuple[np.ndarray, ...]:
        for reducer in reducers:
            reducer.set_threshold(t)
        measured[t] = predict(runner, images.images)
        return measured[t]

    if thresholds is None:
        thresholds = default_thresholds(run(0.0)[2], config_threshold)  # the variances measured pruning only
    rows = []
    for t in thresholds:
        logits, pooled, svar = measured[t] if t in measured else run(t)
        kind = {0.0: "prune only", POOL_ONLY: "pool only"}.get(t, "")
        if config_threshold is not None and t == float(config_threshold):
            kind = (kind + ", config" if kind else "config")
        rows.append({"threshold": t, "kind": kind, "pooled_fraction": pooled.mean(axis=0).tolist(),
                     "svar_mean": svar.astype(np.float64).mean(axis=0).tolist(),
                     **agreement_metrics(reference, logits, images.labels)})
    return rows, len(stats.compile_cache)


def _choose(rows: Sequence[dict[str, Any]]) -> int:
    """Index of the winner by :data:`RULE` (rows sorted by threshold)."""
    return min(range(len(rows)), key=lambda i: (-rows[i]["agreement"], rows[i]["kl"], rows[i]["threshold"]))


def calibrate(cfg: dict[str, Any], ckpt_file: str, data: str, *, split: str = "val", max_images: int = 512,
              target: str | None = None, thresholds: Sequence[float] | None = None,
              batch_size: int | None = None) -> dict[str, Any]:
    """Evaluate candidate thresholds for the config's r schedule (or the one meeting ``target``, see
    :func:`src.analysis.budget.parse_target`) on up to ``max_images`` images of ``data`` (module docstring) and
    choose one by :data:`RULE`. Returns the report (JSON-ready): ``rows`` (threshold, kind,
    pooled_fraction and svar_mean per PP block, agreement, kl, top1), ``chosen`` (row index), ``ppt_yaml``
    (the block to paste), the schedule, the images used and the unreduced model's top-1.

    Raises ValueError for a config without a ppt setting, a target that cannot be met, negative thresholds
    or a folder without readable images, before any model runs."""
    given = None if thresholds is None else _check_thresholds(thresholds)
    sched, baseline_macs = _schedule(cfg, target)
    images = load_calibration_images(cfg, data, split, max_images)
    batch_size = batch_size or cfg["data"]["batch_size"]
    run_cfg = {**cfg, "ppt": {**cfg["ppt"], "r": list(sched.r), "layers": list(sched.layers)}}
    reference = predict(CellPredictor(build_model(run_cfg, ckpt_file, with_ppt=False), batch_size), images.images)
    model = build_model(run_cfg, ckpt_file)
    rows, compiles = _run_candidates(model, images, given, cfg["ppt"]["threshold"], batch_size, reference)
    chosen = _choose(rows)
    macs = int(count_macs(model)["total"])
    unreduced_top1 = None if images.labels is None else \
        100.0 * float((reference.argmax(axis=1) == images.labels).mean())
    source = "" if target is None else f", r from budget.py --target {target}"
    header = (f"# calibrated by calibrate.py on {len(images.images)} images of {images.folder}{source}: "
              f"{rows[chosen]['agreement']:.2f} % top-1 agreement with the unreduced model")
    return {"model": cfg["model"]["name"], "checkpoint": ckpt_file, "data": str(images.folder), "split": split,
            "labels": images.labels_note, "num_images": len(images.images), "num_files": images.num_files,
            "skipped_files": [list(s) for s in images.skipped], "target": target, "layers": list(sched.layers),
            "r": list(sched.r), "macs": macs, "baseline_macs": baseline_macs, "unreduced_top1": unreduced_top1,
            "candidate_compiles": compiles, "rule": RULE, "rows": rows, "chosen": chosen,
            "ppt_yaml": header + "\n" + ppt_yaml(sched, rows[chosen]["threshold"], cfg["ppt"]["prop_attn"])}


def format_calibration(report: Mapping[str, Any]) -> str:
    """The text ``calibrate.py`` prints: the candidates' table, the chosen one and its ``ppt:`` block."""
    labelled = report["unreduced_top1"] is not None
    header = ["", "threshold", "pooled % per PP block", "agreement %", "KL", "GMACs"] + (["top-1 %"] if labelled
                                                                                          else [])
    table = []
    for i, row in enumerate(report["rows"]):
        cells = ["*" if i == report["chosen"] else "", f"{row['threshold']:g}" + (f" ({row['kind']})" if row["kind"]
                                                                                  else ""),
                 " / ".join(f"{100 * p:.0f}" for p in row["pooled_fraction"]), f"{row['agreement']:.2f}",
                 f"{row['kl']:.3g}", f"{report['macs'] / 1e9:.4f}"]
        table.append(cells + ([f"{row['top1']:.2f}"] if labelled else []))
    chosen = report["rows"][report["chosen"]]
    lines = [f"{report['model']}: r {report['r']} at PP layers {report['layers']}, {report['macs'] / 1e9:.4f} GMACs "
             f"per image ({report['macs'] / report['baseline_macs']:.3f} of the unreduced "
             f"{report['baseline_macs'] / 1e9:.4f}; the threshold does not change it)",
             f"{report['num_images']} images of {report['data']} ({report['labels']})"
             + (f"; unreduced top-1 {report['unreduced_top1']:.2f} %" if labelled else "")]
    if report["skipped_files"]:
        lines.append(f"skipped {len(report['skipped_files'])} unreadable files, first: {report['skipped_files'][0][1]}")
    lines += [format_table(header, table, left=2), "",
              f"chosen (*): threshold {chosen['threshold']:g} by the {report['rule']}"]
    if chosen["threshold"] in (0.0, POOL_ONLY):
        policy = "prune" if chosen["threshold"] == 0.0 else "pool"
        lines.append(f"(the same logits as ppt.policy: {policy}, which skips the other branch and costs less)")
    return "\n".join(lines + ["", report["ppt_yaml"]])
