"""Fine-tuning with distillation (the config's ``distill:`` section): the frozen teacher and the loss network
that runs it inside the compiled train step.

The teacher is ``self`` (the student's architecture without token reduction, with the fine-tuning's starting
weights: PPT learns to match the model it came from) or a weights file of any model this project builds,
described by ``distill.teacher_config``. Its parameters are renamed under :data:`TEACHER_PREFIX` (two models
in one graph need distinct parameter names), are not trainable, are not in the optimiser and are not saved in
the training state; the state records :func:`teacher_record` instead, so a resume can tell whether the
teacher is the same.
"""
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mindspore import Tensor, nn, ops

from ..config import SELF_TEACHER, configured_spec, load_config
from ..factory import build_model
from ..io.checkpoint import CheckpointMismatchError, load_state_dict, read_state_dict
from ..models import VisionTransformer
from .loss import DistillationLoss

__all__ = ["TEACHER_PREFIX", "Teacher", "TrainHeads", "DistillationNet", "build_teacher", "teacher_record",
           "weights_sha256", "describe_teacher"]

TEACHER_PREFIX = "teacher."


class TrainHeads(nn.Cell):
    """``construct(images) -> (logits, kd_logits)``: a distilled DeiT's class and distillation heads, another
    model's logits twice (its class head takes both terms of the loss)."""

    def __init__(self, model: VisionTransformer):
        super().__init__(auto_prefix=False)  # keep the model's parameter names
        self.model = model
        self.distilled = model.distilled

    def construct(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if self.distilled:
            return self.model.forward_heads(images)
        logits = self.model(images)
        return logits, logits


class DistillationNet(nn.Cell):
    """``construct(images, targets) -> loss``: the student's heads and the frozen teacher's logits (no
    gradient flows into the teacher) through a :class:`~src.train.loss.DistillationLoss`."""

    def __init__(self, student: nn.Cell, teacher: nn.Cell, loss: DistillationLoss):
        super().__init__(auto_prefix=False)
        self.student, self.teacher, self.loss = student, teacher, loss

    def construct(self, images: Tensor, targets: Tensor) -> Tensor:
        logits, kd_logits = self.student(images)
        teacher_logits = ops.stop_gradient(self.teacher(images))
        return self.loss(logits, kd_logits, teacher_logits, targets)


@dataclass
class Teacher:
    """The frozen teacher and what identifies it (:func:`teacher_record`)."""
    model: VisionTransformer
    record: dict[str, Any]


def weights_sha256(model: nn.Cell) -> str:
    """SHA-256 of a model's parameters (names, shapes, float32 values) in name order."""
    digest = hashlib.sha256()
    for name, p in sorted(model.parameters_and_names(), key=lambda item: item[0]):
        value = np.ascontiguousarray(p.asnumpy().astype(np.float32))
        digest.update(f"{name}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def teacher_record(cfg: Mapping[str, Any], model: nn.Cell, weights_file: str) -> dict[str, Any]:
    """What a training state stores about the teacher: its model and ppt sections, its weights' hash, and
    where the weights came from (a resumed ``self`` run reloads its teacher from there)."""
    return {"model": dict(cfg["model"]), "ppt": dict(cfg["ppt"]), "weights_sha256": weights_sha256(model),
            "weights_file": os.path.abspath(weights_file)}  # absolute: a resume may run from elsewhere


def _teacher_config(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The teacher's config (drop path off: a frozen teacher is always evaluated) and how messages name it."""
    distill = cfg["distill"]
    if distill["teacher"] == SELF_TEACHER or distill["teacher_config"] is None:
        tcfg, where = dict(cfg, ppt=dict(cfg["ppt"], enabled=False)), "this config's model without PPT"
    else:
        tcfg, where = load_config(distill["teacher_config"]), f"teacher config {distill['teacher_config']}"
    return dict(tcfg, model=dict(tcfg["model"], drop_path_rate=0.0)), where


def _check_fits(cfg: Mapping[str, Any], tcfg: Mapping[str, Any], what: str) -> None:
    """The teacher must predict the student's classes from the student's images."""
    classes, t_classes = cfg["model"]["num_classes"], tcfg["model"]["num_classes"]
    if t_classes != classes:
        raise ValueError(f"{what}: {t_classes} classes, the student has {classes}; the teacher's outputs must be "
                         f"the student's classes")
    size, t_size = configured_spec(cfg).img_size, configured_spec(tcfg).img_size
    if t_size != size:
        raise ValueError(f"{what}: image size {t_size}, the student's is {size}; the teacher sees the student's "
                         f"images")


def build_teacher(cfg: Mapping[str, Any], starting_weights: str | None) -> Teacher | None:
    """The frozen teacher of ``cfg["distill"]``, or None when ``distill.type`` is none.

    ``starting_weights`` are the fine-tuning's starting weights: the ``self`` teacher's.

    Raises:
        ValueError: ``self`` without starting weights, or starting weights with another class count; a
            teacher with another class count or image size than the student; weights that do not load
            strictly into the teacher's model (one line each).
        FileNotFoundError: a teacher weights file that does not exist.
    """
    distill = cfg["distill"]
    if distill["type"] == "none":
        return None
    is_self = distill["teacher"] == SELF_TEACHER
    if is_self and not starting_weights:
        raise ValueError("distill.teacher is self (this model without PPT, with the fine-tuning's starting "
                         "weights) but no starting weights were given: the teacher would be random weights")
    path = starting_weights if is_self else distill["teacher"]
    tcfg, where = _teacher_config(cfg)
    what = f"the self teacher (starting weights {path})" if is_self else f"teacher {path} ({where})"
    _check_fits(cfg, tcfg, what)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what}: no such weights file")
    state = read_state_dict(path)
    head = state.get("head.weight")
    if is_self and head is not None and head.shape[0] != cfg["model"]["num_classes"]:
        raise ValueError(f"{what}: the weights have {head.shape[0]} classes, the student has "
                         f"{cfg['model']['num_classes']}; a self teacher needs a trained classifier for the "
                         f"student's classes")
    model = build_model(tcfg)
    try:
        load_state_dict(model, state, source=path)
    except CheckpointMismatchError as exc:
        raise ValueError(f"{what}: {exc}") from None
    record = teacher_record(tcfg, model, path)
    for name, p in model.parameters_and_names():
        p.name = TEACHER_PREFIX + name
        p.requires_grad = False
    model.set_train(False)
    return Teacher(model, record)


def describe_teacher(record: Mapping[str, Any]) -> str:
    """One line for the log: the teacher's architecture, PPT and weights."""
    ppt = "PPT" if record["ppt"]["enabled"] else "no PPT"
    return (f"{record['model']['name']} ({ppt}), weights {record['weights_file']} "
            f"(sha256 {record['weights_sha256'][:12]})")
