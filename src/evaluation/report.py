"""What an evaluation prints and draws: the side-by-side comparison table, the report, top-1 per named class and
the confusion-matrix plot; :func:`format_table` is the one text-table layout of the project's reports."""
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..io.fileio import write_bytes_atomic

__all__ = ["format_comparison", "format_table", "per_class_results", "format_report", "format_per_class",
           "plot_confusion"]


def format_comparison(results: dict[str, dict[str, Any]]) -> str:
    """A text table with one column per result of :func:`evaluate` (e.g. ``{"baseline": ..., "PPT": ...}``).

    Rows: top-1, top-5, loss, GMACs, model and end-to-end images/s, then the changes relative to the first
    column: top-1 difference (points), forward speed-up and MACs reduction (first column's MACs / this one's).
    """
    if not results:
        raise ValueError("format_comparison: no results to compare")
    names = list(results)
    ref = results[names[0]]
    rows: list[list[str]] = [
        ["top-1 (%)"] + [f"{r['top1']:.2f}" for r in results.values()],
        ["top-5 (%)"] + [f"{r['top5']:.2f}" for r in results.values()],
        ["loss"] + [f"{r['loss']:.4f}" for r in results.values()],
        ["GMACs / image"] + [f"{r['macs'] / 1e9:.4g}" for r in results.values()],
        ["images/s (model)"] + [f"{r['forward_images_per_sec']:.1f}" for r in results.values()],
        ["images/s (end to end)"] + [f"{r['images_per_sec']:.1f}" for r in results.values()],
        [f"top-1 vs {names[0]} (pts)"] + [f"{r['top1'] - ref['top1']:+.2f}" for r in results.values()],
        [f"speed-up vs {names[0]}"] + [_ratio(r["forward_images_per_sec"], ref["forward_images_per_sec"])
                                       for r in results.values()],
        [f"MACs reduction vs {names[0]}"] + [_ratio(ref["macs"], r["macs"]) for r in results.values()],
    ]
    return format_table([""] + names, rows)


def format_table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Aligned text columns under a dashed rule; the first ``left`` columns flush left, the others right."""
    widths = [max(len(row[i]) for row in rows + [header]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < left else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header] + rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ratio(num: float, den: float) -> str:
    return f"{num / den:.2f}x" if den > 0 else "n/a"


def per_class_results(confusion: list[list[int]], names: Sequence[str]) -> list[dict[str, Any]]:
    """Per class, from a confusion matrix of :func:`evaluate`: ``class`` (index), ``name``, ``images`` (of that
    true class) and ``top1`` (percent of them predicted as it; None without images)."""
    matrix = np.asarray(confusion, np.int64)
    rows = []
    for i, name in enumerate(names):
        images = int(matrix[i].sum())
        rows.append({"class": i, "name": name, "images": images,
                     "top1": 100.0 * int(matrix[i, i]) / images if images else None})
    return rows


def format_report(report: dict[str, Any]) -> str:
    """The human-readable summary of :func:`evaluate_checkpoint`'s report (the comparison table included
    when there are several results)."""
    lines = [f"data: {report['data_root']}/{report['split']}: {report['num_classes']} classes, "
             f"{report['num_files']} image files, {report['num_images']} evaluated"]
    bad = report["unreadable_files"]
    if bad:
        lines.append(f"unreadable files, not counted: {len(bad)}")
        lines += [f"  {item['path']}: {item['reason']}" for item in bad]
    if report["ignored_files"]:
        lines.append(f"non-image files ignored: {len(report['ignored_files'])}")
    for name, r in report["results"].items():
        lines.append(f"[{name}] top-1 {r['top1']:.2f} %  top-5 {r['top5']:.2f} %  loss {r['loss']:.4f}  "
                     f"GMACs/image {r['macs'] / 1e9:.4g}  images/s {r['forward_images_per_sec']:.1f} (model), "
                     f"{r['images_per_sec']:.1f} (end to end, {r['seconds']:.1f} s)")
        svars = r["svar_mean"] or [None] * len(r["ppt_layers"])
        for layer, pooled, svar in zip(r["ppt_layers"], r["pooled_fraction"], svars):
            variance = "" if svar is None else f" (mean score variance {svar:.3g})"
            lines.append(f"  PP block {layer}: {100 * pooled:.1f} % of images pooled, {100 * (1 - pooled):.1f} % "
                         f"pruned{variance}")
    if len(report["results"]) > 1:
        lines += ["", format_comparison(report["results"])]
    if "class_names" in report:
        lines += ["", f"top-1 per class (names: {report['class_names_source']}):", format_per_class(report["results"])]
    return "\n".join(lines)


def format_per_class(results: dict[str, dict[str, Any]]) -> str:
    """Top-1 per class of :func:`evaluate_checkpoint`'s ``per_class`` results, one column per result. With
    several results a last column gives the change of the last against the first, and the classes it hurts
    most come first; otherwise the classes are in index order."""
    names = list(results)
    rows = [tuple(cells) for cells in zip(*(results[n]["per_class"] for n in names))]  # per class, one per result
    header = ["class", "name", "images"] + [f"{n} top-1 %" for n in names]
    if len(names) > 1:
        header.append(f"{names[-1]} vs {names[0]} (pts)")
        # Classes without images (no change to rank) last; ties in class order.
        rows.sort(key=lambda row: (row[0]["top1"] is None, _change(row) or 0.0, row[0]["class"]))
    table = []
    for row in rows:
        first = row[0]
        cells = [str(first["class"]), _short(first["name"]), str(first["images"])]
        cells += ["-" if c["top1"] is None else f"{c['top1']:.2f}" for c in row]
        if len(names) > 1:
            cells.append("-" if first["top1"] is None else f"{_change(row):+.2f}")
        table.append(cells)
    return format_table(header, table, left=2)


def _change(row: tuple[dict[str, Any], ...]) -> float | None:
    return None if row[0]["top1"] is None else row[-1]["top1"] - row[0]["top1"]


def _short(name: str, width: int = 32) -> str:
    return name if len(name) <= width else name[:width - 3] + "..."


def plot_confusion(report: dict[str, Any], path: str | os.PathLike) -> None:
    """The confusion matrices of a ``per_class`` report as one PNG, one panel per result; each row is a true
    class, coloured by the share of its images predicted as each class. Written atomically."""
    import matplotlib  # late: only plotting needs it

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    names, results = report["class_names"], report["results"]
    side = 4.5 + 0.12 * min(len(names), 30)
    fig, axes = plt.subplots(1, len(results), figsize=(side * len(results) + 1.0, side), dpi=100, squeeze=False)
    for ax, (label, result) in zip(axes[0], results.items()):
        counts = np.asarray(result["confusion"], np.float64)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        image = ax.imshow(shares, vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
        ax.set_title(f"{label}: top-1 {result['top1']:.2f} %")
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        if len(names) <= 30:  # more names would overlap
            ticks = np.arange(len(names))
            ax.set_xticks(ticks, [_short(n, 16) for n in names], rotation=90, fontsize=7)
            ax.set_yticks(ticks, [_short(n, 16) for n in names], fontsize=7)
    fig.colorbar(image, ax=axes[0].tolist(), label="share of the true class's images")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buffer.getvalue(), make_parents=True)
