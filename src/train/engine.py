"""The training loop: data per epoch, compiled steps, progress lines, validation, checkpoints, resume and
data-parallel runs (``msrun``; only rank 0 writes files).

Reproducibility: everything random in an epoch's data is a function of ``(seed, epoch, rank)``: the training
pipeline is rebuilt every epoch with a seed derived from ``(seed, epoch)`` (sample order, the same on every
rank) and draws per-image augmentation from ``(that seed, rank, position)`` and Mixup/CutMix from ``(that
seed, rank)``, whatever the number of workers. A resumed epoch sees the same batches as an uninterrupted
run, and the ranks of a data-parallel run augment independently. Not covered: stochastic depth
(``model.drop_path_rate > 0``) draws from the graph's random-op state, which cannot be saved.
"""
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from ..config import SELF_TEACHER, save_config
from ..evaluation import evaluate
from ..factory import build_model, dataset_from_config
from ..io.checkpoint import load_state_dict, read_state_dict, save_weights
from ..io.class_names import CLASS_NAMES_KEY
from ..io.fileio import write_text_atomic
from ..models import PPTStats, VisionTransformer
from .distill import DistillationNet, Teacher, TrainHeads, build_teacher, describe_teacher
from .ema import ModelEMA
from .loss import DistillationLoss, create_loss
from .optim import create_optimizer, scaled_lr
from .state import (
    TEACHER_KEY,
    ResumeError,
    ema_weights_path,
    find_resume_file,
    load_training_state,
    prune_checkpoints,
    read_state_meta,
    save_training_state,
    state_path,
    weights_path,
)
from .step import TrainStep, resolve_precision

__all__ = ["TrainingDiverged", "TrainResult", "epoch_seed", "train", "train_dataset", "val_dataset"]

LOG_NAME = "log.jsonl"


class TrainingDiverged(ValueError):
    """The loss or the gradients stopped being finite (see the message for the step and the last checkpoint)."""


@dataclass
class TrainResult:
    """What :func:`train` returns (rank 0 also has them in ``output_dir/log.jsonl``)."""
    output_dir: Path
    epochs_run: int
    best_top1: float
    best_epoch: int
    model: VisionTransformer
    history: list[dict[str, Any]] = field(default_factory=list)
    final_val: dict[str, Any] | None = None


def epoch_seed(seed: int, epoch: int) -> int:
    """The data seed of ``epoch`` (0-based), a function of (seed, epoch) only."""
    return int(np.random.default_rng([seed, epoch]).integers(2 ** 31 - 1))


@dataclass
class _Dist:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed() -> _Dist:
    """Data parallel when launched by ``msrun`` with several workers (it sets MS_WORKER_NUM)."""
    workers = int(os.environ.get("MS_WORKER_NUM", "1"))
    if workers <= 1:
        return _Dist()
    from mindspore.communication import get_group_size, get_rank, init

    init()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=get_group_size())
    return _Dist(get_rank(), get_group_size())


def train_dataset(cfg: Mapping[str, Any], epoch: int, dist: _Dist):
    """The training pipeline of ``epoch`` (0-based) for this rank, seeded by ``epoch_seed(seed, epoch)``."""
    return dataset_from_config(cfg, cfg["train"]["train_split"], training=True, seed=epoch_seed(cfg["seed"], epoch),
                               num_shards=dist.size, shard_id=dist.rank)


def val_dataset(cfg: Mapping[str, Any]):
    """The validation pipeline (every image once; the last batch padded so graph mode compiles once)."""
    return dataset_from_config(cfg, cfg["train"]["val_split"], pad_last=True)[0]


def _say(text: str, dist: _Dist) -> None:
    """Print on rank 0 only."""
    if dist.main:
        print(text, flush=True)


def _load_pretrained(model: VisionTransformer, path: str, dist: _Dist) -> None:
    """Strict load; the classifier head(s) are left out (and re-initialised) when the class count differs."""
    state = read_state_dict(path)
    head = state.get("head.weight")
    drop_head = head is not None and head.shape[0] != model.num_classes
    load_state_dict(model, state, drop_head=drop_head, source=path)
    note = (f" without its classifier head ({head.shape[0]} classes, the model has {model.num_classes}: "
            f"drop_head, the head starts from random weights)") if drop_head else ""
    _say(f"weights: {path}{note}", dist)


def _write_log(path: Path, records: list[dict[str, Any]]) -> None:
    """Rewrite the JSON-lines log atomically (a few lines per epoch; never half a line)."""
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def _read_log(path: Path, last_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in records if r["epoch"] <= last_epoch]


def _copy_weights(src: ModelEMA, dst: VisionTransformer) -> None:
    """EMA weights into the (identical) evaluation model, matched by the parameters' plain names."""
    shadows = src.shadow_by_name()
    for name, p in dst.parameters_and_names():
        p.set_data(shadows[name].value().copy())


def _val_summary(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("top1", "top5", "loss", "num_images", "macs", "ppt_layers", "pooled_fraction", "svar_mean",
            "images_per_sec")
    return {k: result[k] for k in keys}


@dataclass
class _Run:
    """Everything a run sets up before its first epoch, and the running best/history."""
    cfg: Mapping[str, Any]
    dist: _Dist
    out: Path
    model: VisionTransformer
    step: TrainStep
    schedule: np.ndarray
    steps_per_epoch: int
    global_batch: int
    ema_model: VisionTransformer | None
    class_names: list[str]  # the training split's sorted class folders: label i is class_names[i]
    teacher_record: dict[str, Any] | None  # what identifies the distillation teacher (None: no distillation)
    start_epoch: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0
    skipped_run: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _check_start(cfg: Mapping[str, Any], ckpt_file: str | None, resume: str | None) -> Path | None:
    """Refuse a run that cannot start before anything is created; returns the state file to resume from."""
    if ckpt_file and resume:
        raise ValueError("starting weights and a training state to resume exclude each other (a resumed run "
                         "has its own weights)")
    if cfg["train"]["finetune"] and not (ckpt_file or resume):
        raise ValueError("train.finetune is true (a fine-tuning recipe, with a fine-tuning learning rate) but no "
                         "starting weights were given: it would train random weights; give the pretrained weights, "
                         "or set train.finetune=false to train from scratch")
    if ckpt_file and not Path(ckpt_file).is_file():
        raise FileNotFoundError(f"starting weights {ckpt_file}: no such file")
    return find_resume_file(resume) if resume else None


def _self_teacher_weights(cfg: Mapping[str, Any], ckpt_file: str | None, state_file: Path | None) -> str | None:
    """The weights of a ``self`` teacher: the starting weights, or for a resumed run those it started from."""
    if state_file is None or cfg["distill"]["type"] == "none" or cfg["distill"]["teacher"] != SELF_TEACHER:
        return ckpt_file
    record = read_state_meta(state_file).get(TEACHER_KEY)
    if record is None:
        raise ResumeError(f"training state {state_file}: written by a run without a teacher; this run distils "
                          f"(distill.type {cfg['distill']['type']})")
    return record["weights_file"]


def _setup(cfg: Mapping[str, Any], out: Path, ckpt_file: str | None, dist: _Dist, teacher_file: str | None) -> _Run:
    """Model (with starting weights), precision, optimiser, EMA, the distillation teacher (``teacher_file``:
    the self teacher's weights) and the compiled train step."""
    tcfg = cfg["train"]
    ms.set_seed(cfg["seed"])  # weight init (identical on every rank)
    model = build_model(dict(cfg))
    if ckpt_file:
        _load_pretrained(model, ckpt_file, dist)
    amp_level, loss_scale = resolve_precision(tcfg["amp_level"], tcfg["loss_scale"], ms.get_context("device_target"))
    net = ms.amp.auto_mixed_precision(model, amp_level) if amp_level != "O0" else model
    _, info = train_dataset(cfg, 0, dist)
    global_batch = cfg["data"]["batch_size"] * dist.size
    optimizer, schedule = create_optimizer(model.trainable_params(), tcfg, info.num_batches, global_batch)
    scaler = None
    if loss_scale == "dynamic":
        scaler = ms.amp.DynamicLossScaler(tcfg["loss_scale_init"], 2, tcfg["loss_scale_window"])
    ema = ModelEMA(model.trainable_params(), tcfg["ema_decay"]) if tcfg["ema"] else None
    teacher = build_teacher(cfg, teacher_file)
    step = TrainStep(_loss_net(cfg, model, net, teacher, create_loss(info.soft_targets, model.num_classes), amp_level),
                     optimizer, scaler=scaler, clip_grad=tcfg["clip_grad"], ema=ema, distributed=dist.size > 1)
    step.set_train(True)
    if teacher is not None:
        teacher.model.set_train(False)  # frozen and always in inference mode
        _say(f"distillation: {cfg['distill']['type']} (alpha {cfg['distill']['alpha']:g}, tau "
             f"{cfg['distill']['tau']:g}) from {describe_teacher(teacher.record)}", dist)
    ema_model = build_model(dict(cfg)) if ema is not None else None
    peak = scaled_lr(tcfg["base_lr"], global_batch)
    _say(f"precision: amp {amp_level}, loss scaling {loss_scale}; peak lr {peak:.3g} = train.base_lr "
         f"{tcfg['base_lr']:g} x global batch {global_batch} / 512", dist)
    if peak < tcfg["min_lr"]:
        _say(f"note: the peak lr {peak:.3g} is below train.min_lr {tcfg['min_lr']:g}, so the cosine phase rises to "
             f"min_lr (as DeiT's scheduler does); lower train.min_lr for a decaying schedule", dist)
    return _Run(cfg, dist, out, model, step, schedule, info.num_batches, global_batch, ema_model, list(info.classes),
                teacher.record if teacher is not None else None)


def _loss_net(cfg: Mapping[str, Any], model: VisionTransformer, net: nn.Cell, teacher: Teacher | None,
              base_loss: nn.Cell, amp_level: str) -> nn.Cell:
    """``(images, targets) -> loss``: the (AMP-wrapped) student ``net`` against the labels, or with a teacher
    DeiT's distillation loss, student and teacher at the same AMP level."""
    if teacher is None:
        return nn.WithLossCell(net, base_loss)
    heads, teacher_net = TrainHeads(model), teacher.model
    if amp_level != "O0":
        heads = ms.amp.auto_mixed_precision(heads, amp_level)
        teacher_net = ms.amp.auto_mixed_precision(teacher_net, amp_level)
    distill = cfg["distill"]
    return DistillationNet(heads, teacher_net, DistillationLoss(base_loss, distill["type"], distill["alpha"],
                                                                distill["tau"]))


def _resume(run: _Run, state_file: Path) -> None:
    """Restore the train step (weights, optimiser, EMA, loss scale) and the run's progress from a state file."""
    meta = load_training_state(run.step, run.model, state_file, run.cfg, run.dist.size, run.class_names,
                               run.teacher_record)
    run.start_epoch, run.best_top1, run.best_epoch = meta["epoch"], meta["best_top1"], meta["best_epoch"]
    run.skipped_run = meta["skipped_run"]
    run.history = _read_log(run.out / LOG_NAME, run.start_epoch)
    _say(f"resumed from {state_file}: epoch {run.start_epoch} done, global step {meta['global_step']}", run.dist)


def _check_step(run: _Run, loss: float, finite: bool, epoch: int, i: int) -> None:
    """Count overflow-skipped steps; raise when the loss diverged or too many steps were skipped in a row."""
    if finite:
        run.skipped_run = 0
        return
    run.skipped_run += 1
    last = state_path(run.out, epoch)  # the state after the previous epoch, if any
    where = f"epoch {epoch + 1} step {i + 1} (global step {epoch * run.steps_per_epoch + i + 1})"
    keep = f"; the last good checkpoint is {last}" if last.exists() else "; no checkpoint was written yet"
    if run.step.scaler is None:
        raise TrainingDiverged(f"{where}: loss {loss} / gradients are not finite with train.loss_scale none; "
                               f"stopped without updating the weights{keep} (lower train.base_lr or set "
                               f"train.clip_grad)")
    if run.skipped_run >= run.cfg["train"]["max_skipped_steps"]:
        raise TrainingDiverged(f"{where}: {run.skipped_run} consecutive steps overflowed (loss scale now "
                               f"{float(run.step.loss_scale.asnumpy()):g}); stopped{keep}")


def _train_epoch(run: _Run, epoch: int, progress: bool) -> dict[str, Any]:
    """One pass over this rank's shard; returns the epoch's log record (without validation)."""
    dataset, _ = train_dataset(run.cfg, epoch, run.dist)
    epochs, log_every = run.cfg["train"]["epochs"], run.cfg["train"]["log_interval"]
    t_epoch = time.perf_counter()
    losses, step_times, data_time = [], [], 0.0
    t_data = time.perf_counter()
    for i, (images, targets) in enumerate(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)):
        data_time += time.perf_counter() - t_data
        t0 = time.perf_counter()
        loss, finite, norm = run.step(Tensor(images), Tensor(targets))
        loss, finite = float(loss.asnumpy()), bool(finite.asnumpy())
        step_times.append(time.perf_counter() - t0)
        _check_step(run, loss, finite, epoch, i)
        if finite:
            losses.append(loss)
        if progress and ((i + 1) % log_every == 0 or i + 1 == run.steps_per_epoch):
            recent = step_times[1:][-log_every:] or step_times
            lr = run.schedule[min(int(run.step.optimizer.global_step.asnumpy()[0]), len(run.schedule) - 1)]
            _say(f"epoch {epoch + 1}/{epochs} step {i + 1}/{run.steps_per_epoch} loss {loss:.4f} lr {lr:.3e} "
                 f"grad_norm {float(norm.asnumpy()):.3f} {run.global_batch / np.mean(recent):.1f} img/s", run.dist)
        t_data = time.perf_counter()
    done = (epoch + 1) * run.steps_per_epoch
    return {
        "epoch": epoch + 1, "global_step": done,
        "train_loss": float(np.mean(losses)) if losses else math.nan,
        "lr": float(run.schedule[min(done, len(run.schedule)) - 1]),
        "skipped_steps": len(step_times) - len(losses), "loss_scale": float(run.step.loss_scale.asnumpy()),
        # The first step of a run includes the graph compile: left out of the mean.
        "step_seconds": float(np.mean(step_times[1:] if len(step_times) > 1 else step_times)),
        "data_seconds": data_time, "epoch_seconds": time.perf_counter() - t_epoch,
    }


def _save_epoch(run: _Run, record: dict[str, Any], improved: bool) -> None:
    """The training state first (so the newest state is always complete), then the weight files."""
    cfg, out, epoch = run.cfg, run.out, record["epoch"]
    names = {CLASS_NAMES_KEY: run.class_names}  # in every file, so the weights name their outputs
    meta = {"epoch": epoch, "global_step": record["global_step"], "best_top1": run.best_top1,
            "best_epoch": run.best_epoch, "skipped_run": run.skipped_run, "seed": cfg["seed"],
            "world_size": run.dist.size, "config": dict(cfg), TEACHER_KEY: run.teacher_record, **names}
    save_training_state(run.step, run.model, state_path(out, epoch), meta)
    weight_meta = {"epoch": epoch, "top1": record["val"]["top1"], "model": cfg["model"]["name"], **names}
    save_weights(run.model, weights_path(out, epoch), weight_meta)
    if improved:
        save_weights(run.model, out / "best.ckpt", weight_meta)
    if run.ema_model is not None:
        ema_top1 = record["val_ema"]["top1"]
        ema_meta = dict(weight_meta, top1=ema_top1, ema=True)
        save_weights(run.ema_model, ema_weights_path(out, epoch), ema_meta)
        if ema_top1 >= max(r["val_ema"]["top1"] for r in run.history if "val_ema" in r):
            save_weights(run.ema_model, out / "best_ema.ckpt", ema_meta)
    prune_checkpoints(out, cfg["train"]["keep_checkpoints"])


def _validate(run: _Run, record: dict[str, Any], val_set: Any, nets: dict[str, PPTStats],
              progress: bool) -> dict[str, Any]:
    """Rank 0: validate the weights (and the EMA), log, checkpoint; returns the model's validation result."""
    epoch = record["epoch"]
    val = evaluate(nets["model"], val_set, progress=progress, desc=f"val {epoch}")
    record["val"] = _val_summary(val)
    if run.ema_model is not None:
        _copy_weights(run.step.ema, run.ema_model)
        record["val_ema"] = _val_summary(evaluate(nets["ema"], val_set, progress=progress, desc=f"val-ema {epoch}"))
    improved = val["top1"] > run.best_top1
    if improved:
        run.best_top1, run.best_epoch = val["top1"], epoch
    record.update(best_top1=run.best_top1, best_epoch=run.best_epoch)
    run.history.append(record)
    _write_log(run.out / LOG_NAME, run.history)
    _save_epoch(run, record, improved)
    ema_text = f", EMA top-1 {record['val_ema']['top1']:.2f}" if run.ema_model is not None else ""
    _say(f"epoch {epoch}/{run.cfg['train']['epochs']}: train loss {record['train_loss']:.4f}, val top-1 "
         f"{val['top1']:.2f} top-5 {val['top5']:.2f}{ema_text} (best {run.best_top1:.2f} at epoch {run.best_epoch}), "
         f"{record['step_seconds'] * 1000:.0f} ms/step, {record['epoch_seconds']:.0f} s", run.dist)
    return val


def train(cfg: Mapping[str, Any], *, output_dir: os.PathLike, ckpt_file: str | None = None,
          resume: str | None = None, stop_after_epoch: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train ``cfg``'s model (PPT as configured) with its ``train``/``aug`` recipe on ``data.path``.

    Args:
        cfg: a config from ``src.config.load_config``.
        output_dir: where checkpoints, ``log.jsonl`` and ``config.yaml`` go (rank 0 only); created only once
            the starting point is known to be usable.
        ckpt_file: initial weights (e.g. converted DeiT weights); the head is dropped if its class count differs.
        resume: a training state, or an output folder (its newest epoch), to continue from.
        stop_after_epoch: end the run after this epoch (1-based) even if ``train.epochs`` is larger; the
            schedule is still the full one, so resuming continues it exactly.
        progress: print progress lines.

    Raises:
        TrainingDiverged: non-finite loss/gradients without loss scaling, or too many overflow-skipped steps.
        ResumeError: an unusable resume target.
        ValueError: a fine-tuning config (``train.finetune``) without starting weights, both a checkpoint
            and a resume target, or a distillation teacher that cannot be used (``build_teacher``).
    """
    state_file = _check_start(cfg, ckpt_file, resume)
    teacher_file = _self_teacher_weights(cfg, ckpt_file, state_file)
    dist = _init_distributed()
    run = _setup(cfg, Path(output_dir), ckpt_file, dist, teacher_file)
    if state_file is not None:
        _resume(run, state_file)
    epochs = cfg["train"]["epochs"]
    last_epoch = epochs if stop_after_epoch is None else min(epochs, stop_after_epoch)
    if dist.main:
        run.out.mkdir(parents=True, exist_ok=True)
        save_config(dict(cfg), run.out / "config.yaml")
    _say(f"training {cfg['model']['name']} (PPT {'on' if run.model.ppt_layers else 'off'}) for epochs "
         f"{run.start_epoch + 1}..{last_epoch} of {epochs}: {run.steps_per_epoch} steps/epoch, global batch "
         f"{run.global_batch} on {dist.size} device(s), output {run.out}", dist)
    val_set = val_dataset(cfg) if dist.main else None
    nets = {"model": PPTStats(run.model)}
    if run.ema_model is not None:
        nets["ema"] = PPTStats(run.ema_model)
    final_val = None
    for epoch in range(run.start_epoch, last_epoch):
        record = _train_epoch(run, epoch, progress)
        if dist.main:
            final_val = _validate(run, record, val_set, nets, progress)
        else:
            run.history.append(record)
    return TrainResult(run.out, last_epoch - run.start_epoch, run.best_top1, run.best_epoch, run.model,
                       run.history, final_val)
