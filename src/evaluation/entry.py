"""Evaluation entry points: a checkpoint (with its config) or an exported file (in the runtime of its suffix)
over a dataset split, as one JSON-ready report (:mod:`src.evaluation.loop` runs the batches,
:mod:`src.evaluation.report` formats them)."""
import copy
import os
import warnings
from dataclasses import replace
from typing import Any

from ..config import model_kwargs
from ..data import DatasetInfo
from ..deploy import Predictor, Preprocess, check_config_model, runtime_for
from ..deploy.inference import ClassNames, preprocess_from_config, resolve_class_names
from ..factory import build_model, dataset_from_config
from ..flops import count_macs
from ..io.class_names import describe_difference
from ..models import create_model
from .loop import evaluate, evaluate_logits
from .report import per_class_results

__all__ = ["evaluate_checkpoint", "evaluate_exported"]


def _label_names(pre: Preprocess, model_file: str | os.PathLike, info: DatasetInfo,
                 class_names_file: str | None) -> ClassNames:
    """The model's class names for the report (the eval split's class folders name them unless a names file or
    the model file, whose stored names ``pre`` holds, does). Warns when the stored names and the folders share
    names but not their order: then label ``i`` of the data is not class ``i`` of the model."""
    pre = replace(pre, data_path=str(info.root.parent))
    stored, folders = pre.class_names, tuple(info.classes)
    if stored is not None and set(stored) & set(folders) and stored != folders:
        warnings.warn(f"{info.root}: the class folders (the labels, in sorted order) are not the class names stored "
                      f"in {model_file} ({describe_difference(folders, stored)}): a label may not be the model's "
                      f"class of that name", stacklevel=2)
    return resolve_class_names(info.num_classes, pre, class_names_file, model=os.fspath(model_file),
                               splits=(info.split,))


def evaluate_checkpoint(cfg: dict[str, Any], ckpt_file: str, *, split: str = "val", strict: bool = False,
                        compare_baseline: bool = False, progress: bool = True, per_class: bool = False,
                        class_names_file: str | None = None) -> dict[str, Any]:
    """What ``eval.py`` does: evaluate the configured model with ``ckpt_file`` on ``<data.path>/<split>``.

    Args:
        cfg: a config from ``src.config.load_config`` (``data.path`` may be ``"demo"``).
        ckpt_file: the weights, loaded strictly.
        split: the split folder.
        strict: stop at the first unreadable image instead of reporting it and leaving it out.
        compare_baseline: also evaluate the same weights without PPT, first, so the results hold
            ``"baseline"`` then ``"PPT"``; needs ``ppt.enabled``.
        progress: show progress on stderr.
        per_class: also report top-1 per class with its name, and the confusion matrix.
        class_names_file: names of the classes, one per line (default: those stored in the checkpoint, else
            the split's class folders; see :func:`src.deploy.inference.resolve_class_names`).

    Returns:
        A JSON-ready report: ``checkpoint``, ``data_root``, ``split``, ``num_classes``, ``num_files``
        (image files in the split), ``num_images`` (evaluated), ``unreadable_files`` (``{"path",
        "reason"}``), ``ignored_files`` (non-image files), ``results`` (name -> :func:`evaluate` dict; the
        name is ``"PPT"``, or ``"baseline"`` for a config with ``ppt.enabled: false``). With ``per_class``
        also ``class_names``, ``class_names_source``, and per result ``confusion`` and ``per_class``
        (:func:`per_class_results`).
    """
    enabled = cfg["ppt"]["enabled"]
    if compare_baseline and not enabled:
        raise ValueError("comparing with the baseline: the config has ppt.enabled: false, so the model already "
                         "is the baseline; enable PPT to compare")
    model = build_model(cfg, ckpt_file)
    dataset, info = dataset_from_config(cfg, split, strict=strict)
    # Before the minutes of evaluating.
    names = _label_names(preprocess_from_config(cfg, ckpt_file), ckpt_file, info, class_names_file)
    models = {"PPT" if enabled else "baseline": model}
    if compare_baseline:
        models = {"baseline": build_model(cfg, ckpt_file, with_ppt=False), **models}
    results = {name: evaluate(net, dataset, progress=progress, desc=name, per_class=per_class)
               for name, net in models.items()}
    return _dataset_report({"checkpoint": os.fspath(ckpt_file)}, split, info, results, names if per_class else None)


def _dataset_report(head: dict[str, Any], split: str, info: DatasetInfo, results: dict[str, dict[str, Any]],
                    names: ClassNames | None) -> dict[str, Any]:
    """The report of :func:`evaluate_checkpoint` and :func:`evaluate_exported`: ``head`` (the model file), the
    data, the results and, with ``names``, the per-class results."""
    report = {
        **head,
        "data_root": str(info.root.parent),
        "split": split,
        "num_classes": info.num_classes,
        "num_files": info.num_images,
        "num_images": next(iter(results.values()))["num_images"],
        "unreadable_files": [{"path": path, "reason": reason} for path, reason in info.bad_files()],
        "ignored_files": [str(p) for p in info.ignored_files],
        "results": results,
    }
    if names is not None:
        report.update(class_names=list(names.names), class_names_source=names.source)
        for result in results.values():
            result["per_class"] = per_class_results(result["confusion"], names.names)
    return report


def _exported_config(cfg: dict[str, Any], predictor: Predictor) -> dict[str, Any]:
    """``cfg`` with the file's batch size and, when the file stores them, its preprocessing settings (what the
    deployed model expects); a config whose model is not the exported one is an error."""
    cfg = copy.deepcopy(cfg)
    cfg["data"]["batch_size"] = predictor.batch_size
    pre = predictor.preprocess
    if pre is not None:
        cfg["data"].update(crop_pct=pre.crop_pct, interpolation=pre.interpolation, mean=list(pre.mean),
                           std=list(pre.std))
    check_config_model(cfg, predictor)
    return cfg


def evaluate_exported(cfg: dict[str, Any], model_file: str | os.PathLike, *, split: str = "val",
                      strict: bool = False, progress: bool = True, per_class: bool = False,
                      class_names_file: str | None = None, threads: int | None = None) -> dict[str, Any]:
    """What ``eval.py --model FILE`` does: the accuracy of a deployed file (``.onnx``, ``.mindir``, any file a
    registered runtime opens without a config) on ``<data.path>/<split>``, in the file's batch size.

    The data settings come from ``cfg`` (``data.path``, workers), the preprocessing from the file when it
    stores it (else ``cfg``'s), ``macs`` from the configured model, which must have the file's image size and
    classes. The report is :func:`evaluate_checkpoint`'s with the runtime's name (``onnx``, ``mindir``) instead
    of ``checkpoint``; one result named by the runtime's label (``ONNX``, ``MindIR``), without PP-block
    statistics (``ppt_layers`` empty: the file returns logits only). ``threads``: the runtime's intra-op threads.
    """
    runtime = runtime_for(model_file)
    if runtime.needs_config:
        raise ValueError(f"{model_file}: weights, not an exported file; evaluate them as a checkpoint")
    predictor = runtime.open(model_file, threads=threads)
    cfg = _exported_config(cfg, predictor)
    dataset, info = dataset_from_config(cfg, split, strict=strict)
    names = _label_names(replace(preprocess_from_config(cfg), class_names=predictor.class_names), model_file, info,
                         class_names_file)
    macs = int(count_macs(create_model(**model_kwargs(cfg)))["total"])
    result = evaluate_logits(predictor, predictor.num_classes, dataset, desc=runtime.label, macs=macs,
                             progress=progress, per_class=per_class)
    return _dataset_report({runtime.name: os.fspath(model_file)}, split, info, {runtime.label: result},
                           names if per_class else None)
