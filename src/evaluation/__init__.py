"""Evaluation: the loop over an eval pipeline (:mod:`.loop`), what it prints and draws (:mod:`.report`), and the
entry points for a checkpoint or an exported file (:mod:`.entry`)."""
from .entry import evaluate_checkpoint, evaluate_exported
from .loop import evaluate, evaluate_logits, unwrap_pipeline_error
from .report import format_comparison, format_per_class, format_report, format_table, per_class_results, plot_confusion

__all__ = ["evaluate", "evaluate_logits", "unwrap_pipeline_error", "evaluate_checkpoint", "evaluate_exported",
           "format_comparison", "format_table", "per_class_results", "format_report", "format_per_class",
           "plot_confusion"]
