"""The training loop: data per epoch, compiled steps, progress lines, validation, checkpoints, resume and
data-parallel runs (``msrun``; only rank 0 writes files).

Reproducibility: everything random in an epoch is a function of ``(seed, epoch)``: the training pipeline is
rebuilt every epoch with a seed derived from both (sample order, per-image augmentation, Mixup/CutMix), so a
resumed epoch sees the same batches as an uninterrupted run. Not covered: stochastic depth
(``model.drop_path_rate > 0``) draws from the graph's random-op state, which cannot be saved, and MindSpore's
per-image random ops are only reproducible with ``data.num_workers: 1``.
"""
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import mindspore as ms
import mindspore.dataset as mds
from mindspore import Tensor

from ..fileio import write_text_atomic
from ..checkpoint import load_state_dict, read_state_dict, save_weights
from ..config import save_config
from ..data import create_dataset, resolve_data_root
from ..evaluate import evaluate
from ..models import PPTStats, VisionTransformer
from ..cli import build_model
from .ema import ModelEMA
from .loss import create_loss
from .optim import create_optimizer
from .state import (ema_weights_path, find_resume_file, load_training_state, prune_checkpoints,
                    save_training_state, state_path, weights_path)
from .step import TrainStep

__all__ = ["TrainingDiverged", "TrainResult", "epoch_seed", "train", "train_dataset", "val_dataset"]

AUG_KEYS = ("scale", "ratio", "hflip", "randaug_magnitude", "randaug_num_ops", "erase_prob", "mixup_alpha",
            "cutmix_alpha", "mixup_prob", "mixup_switch_prob", "label_smoothing")
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
    history: List[Dict[str, Any]] = field(default_factory=list)
    final_val: Optional[Dict[str, Any]] = None


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


def _aug(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    return {key: cfg["aug"][key] for key in AUG_KEYS}


def train_dataset(cfg: Mapping[str, Any], root: Path, img_size: int, epoch: int, dist: _Dist):
    """The training pipeline of ``epoch`` (0-based) for this rank, seeded by ``epoch_seed(seed, epoch)``."""
    seed = epoch_seed(cfg["seed"], epoch)
    mds.config.set_seed(seed)  # per-image random ops (crop, flip, RandAugment)
    data = cfg["data"]
    return create_dataset(root, cfg["train"]["train_split"], img_size, data["batch_size"], training=True,
                          interpolation=data["interpolation"], mean=data["mean"], std=data["std"],
                          num_workers=data["num_workers"], num_shards=dist.size, shard_id=dist.rank,
                          seed=seed, aug=_aug(cfg), num_classes=cfg["model"]["num_classes"])


def val_dataset(cfg: Mapping[str, Any], root: Path, img_size: int):
    """The validation pipeline (every image once; the last batch padded so graph mode compiles once)."""
    data = cfg["data"]
    dataset, _ = create_dataset(root, cfg["train"]["val_split"], img_size, data["batch_size"], training=False,
                                crop_pct=data["crop_pct"], interpolation=data["interpolation"], mean=data["mean"],
                                std=data["std"], num_workers=data["num_workers"], pad_last=True,
                                num_classes=cfg["model"]["num_classes"])
    return dataset


def _say(text: str, dist: _Dist) -> None:
    """Print on rank 0 only."""
    if dist.main:
        print(text, flush=True)


def _load_pretrained(model: VisionTransformer, path: str, dist: _Dist) -> None:
    """Strict load; the classifier head(s) are left out (and re-initialised) when the class count differs."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--ckpt_file {path}: no such file")
    state = read_state_dict(path)
    head = state.get("head.weight")
    drop_head = head is not None and head.shape[0] != model.num_classes
    load_state_dict(model, state, drop_head=drop_head, source=path)
    note = (f" without its classifier head ({head.shape[0]} classes, the model has {model.num_classes}: "
            f"drop_head, the head starts from random weights)") if drop_head else ""
    _say(f"weights: {path}{note}", dist)


def _write_log(path: Path, records: List[Dict[str, Any]]) -> None:
    """Rewrite the JSON-lines log atomically (a few lines per epoch; never half a line)."""
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def _read_log(path: Path, last_epoch: int) -> List[Dict[str, Any]]:
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in records if r["epoch"] <= last_epoch]


def _copy_weights(src: ModelEMA, dst: VisionTransformer) -> None:
    """EMA weights into the (identical) evaluation model, matched by the parameters' plain names."""
    shadows = src.shadow_by_name()
    for name, p in dst.parameters_and_names():
        p.set_data(shadows[name].value().copy())


def _val_summary(result: Dict[str, Any]) -> Dict[str, Any]:
    keys = ("top1", "top5", "loss", "num_images", "macs", "ppt_layers", "pooled_fraction", "svar_mean",
            "images_per_sec")
    return {k: result[k] for k in keys}


def train(cfg: Mapping[str, Any], *, output_dir: os.PathLike, ckpt_file: Optional[str] = None,
          resume: Optional[str] = None, stop_after_epoch: Optional[int] = None,
          progress: bool = True) -> TrainResult:
    """Train ``cfg``'s model (PPT as configured) with its ``train``/``aug`` recipe on ``data.path``.

    Args:
        cfg: a config from ``src.config.load_config``.
        output_dir: where checkpoints, ``log.jsonl`` and ``config.yaml`` go (rank 0 only).
        ckpt_file: initial weights (e.g. converted DeiT weights); the head is dropped if its class count differs.
        resume: a training state, or an output folder (its newest epoch), to continue from.
        stop_after_epoch: end the run after this epoch (1-based) even if ``train.epochs`` is larger; the
            schedule is still the full one, so ``--resume`` continues it exactly.
        progress: print progress lines.

    Raises:
        TrainingDiverged: non-finite loss/gradients without loss scaling, or too many overflow-skipped steps.
        ResumeError: an unusable resume file.
    """
    if ckpt_file and resume:
        raise ValueError("--ckpt_file and --resume exclude each other (a resumed run has its own weights)")
    tcfg = cfg["train"]
    dist = _init_distributed()
    out = Path(output_dir)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
    ms.set_seed(cfg["seed"])  # weight init (identical on every rank)
    root = resolve_data_root(cfg["data"]["path"])

    model = build_model(dict(cfg))
    if ckpt_file:
        _load_pretrained(model, ckpt_file, dist)
    net = ms.amp.auto_mixed_precision(model, tcfg["amp_level"]) if tcfg["amp_level"] != "O0" else model
    _, info = train_dataset(cfg, root, model.img_size, 0, dist)
    steps_per_epoch = info.num_batches
    global_batch = cfg["data"]["batch_size"] * dist.size
    optimizer, schedule = create_optimizer(model.trainable_params(), tcfg, steps_per_epoch, global_batch)
    scaler = None
    if tcfg["loss_scale"] == "dynamic":
        scaler = ms.amp.DynamicLossScaler(tcfg["loss_scale_init"], 2, tcfg["loss_scale_window"])
    ema = ModelEMA(model.trainable_params(), tcfg["ema_decay"]) if tcfg["ema"] else None
    step = TrainStep(net, create_loss(info.soft_targets, model.num_classes), optimizer, scaler=scaler,
                     clip_grad=tcfg["clip_grad"], ema=ema, distributed=dist.size > 1)
    step.set_train(True)

    start_epoch, best_top1, best_epoch, skipped_run = 0, -1.0, 0, 0
    history: List[Dict[str, Any]] = []
    if resume:
        resume_file = find_resume_file(resume)
        meta = load_training_state(step, model, resume_file, cfg, dist.size)
        start_epoch, best_top1, best_epoch = meta["epoch"], meta["best_top1"], meta["best_epoch"]
        skipped_run = meta["skipped_run"]
        history = _read_log(out / LOG_NAME, start_epoch)
        _say(f"resumed from {resume_file}: epoch {start_epoch} done, global step {meta['global_step']}", dist)

    epochs = tcfg["epochs"]
    last_epoch = epochs if stop_after_epoch is None else min(epochs, stop_after_epoch)
    if dist.main:
        save_config(dict(cfg), out / "config.yaml")
    _say(f"training {cfg['model']['name']} (PPT {'on' if model.ppt_layers else 'off'}) for epochs "
         f"{start_epoch + 1}..{last_epoch} of {epochs}: {steps_per_epoch} steps/epoch, global batch {global_batch}"
         f" on {dist.size} device(s), peak lr {schedule.max():.3g}, output {out}", dist)

    val_set = val_dataset(cfg, root, model.img_size) if dist.main else None
    val_net = PPTStats(model)
    ema_model = build_model(dict(cfg)) if ema is not None else None
    ema_net = PPTStats(ema_model) if ema_model is not None else None
    log_every = tcfg["log_interval"]
    final_val = None

    for epoch in range(start_epoch, last_epoch):
        dataset, _ = train_dataset(cfg, root, model.img_size, epoch, dist)
        t_epoch = time.perf_counter()
        losses, step_times, data_time = [], [], 0.0
        t_data = time.perf_counter()
        for i, (images, targets) in enumerate(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)):
            data_time += time.perf_counter() - t_data
            t0 = time.perf_counter()
            loss, finite, norm = step(Tensor(images), Tensor(targets))
            loss, finite = float(loss.asnumpy()), bool(finite.asnumpy())
            step_times.append(time.perf_counter() - t0)
            global_step = epoch * steps_per_epoch + i + 1
            if finite:
                skipped_run = 0
                losses.append(loss)
            else:
                skipped_run += 1
                last = state_path(out, epoch)  # the state after the previous epoch, if any
                where = f"epoch {epoch + 1} step {i + 1} (global step {global_step})"
                keep = f"; the last good checkpoint is {last}" if last.exists() else "; no checkpoint was written yet"
                if scaler is None:
                    raise TrainingDiverged(f"{where}: loss {loss} / gradients are not finite with train.loss_scale "
                                           f"none; stopped without updating the weights{keep} (lower train.base_lr "
                                           f"or set train.clip_grad)")
                if skipped_run >= tcfg["max_skipped_steps"]:
                    raise TrainingDiverged(f"{where}: {skipped_run} consecutive steps overflowed (loss scale now "
                                           f"{float(step.loss_scale.asnumpy()):g}); stopped{keep}")
            if progress and ((i + 1) % log_every == 0 or i + 1 == steps_per_epoch):
                recent = step_times[1:][-log_every:] or step_times
                lr = schedule[min(int(optimizer.global_step.asnumpy()[0]), len(schedule) - 1)]
                _say(f"epoch {epoch + 1}/{epochs} step {i + 1}/{steps_per_epoch} loss {loss:.4f} lr {lr:.3e} "
                     f"grad_norm {float(norm.asnumpy()):.3f} {global_batch / np.mean(recent):.1f} img/s", dist)
            t_data = time.perf_counter()

        record: Dict[str, Any] = {
            "epoch": epoch + 1, "global_step": (epoch + 1) * steps_per_epoch,
            "train_loss": float(np.mean(losses)) if losses else math.nan,
            "lr": float(schedule[min((epoch + 1) * steps_per_epoch, len(schedule)) - 1]),
            "skipped_steps": len(step_times) - len(losses), "loss_scale": float(step.loss_scale.asnumpy()),
            # The first step of a run includes the graph compile: left out of the mean.
            "step_seconds": float(np.mean(step_times[1:] if len(step_times) > 1 else step_times)),
            "data_seconds": data_time, "epoch_seconds": time.perf_counter() - t_epoch,
        }
        if dist.main:
            val = evaluate(val_net, val_set, progress=progress, desc=f"val {epoch + 1}")
            record["val"] = _val_summary(val)
            final_val = val
            if ema is not None:
                _copy_weights(ema, ema_model)
                record["val_ema"] = _val_summary(evaluate(ema_net, val_set, progress=progress,
                                                          desc=f"val-ema {epoch + 1}"))
            improved = val["top1"] > best_top1
            if improved:
                best_top1, best_epoch = val["top1"], epoch + 1
            record.update(best_top1=best_top1, best_epoch=best_epoch)
            history.append(record)
            _write_log(out / LOG_NAME, history)
            meta = {"epoch": epoch + 1, "global_step": record["global_step"], "best_top1": best_top1,
                    "best_epoch": best_epoch, "skipped_run": skipped_run, "seed": cfg["seed"],
                    "world_size": dist.size, "config": dict(cfg)}
            save_training_state(step, model, state_path(out, epoch + 1), meta)
            weight_meta = {"epoch": epoch + 1, "top1": val["top1"], "model": cfg["model"]["name"]}
            save_weights(model, weights_path(out, epoch + 1), weight_meta)
            if ema_model is not None:
                save_weights(ema_model, ema_weights_path(out, epoch + 1),
                             dict(weight_meta, top1=record["val_ema"]["top1"], ema=True))
            if improved:
                save_weights(model, out / "best.ckpt", weight_meta)
            if ema_model is not None and record["val_ema"]["top1"] >= max(
                    r["val_ema"]["top1"] for r in history if "val_ema" in r):
                save_weights(ema_model, out / "best_ema.ckpt", dict(weight_meta, top1=record["val_ema"]["top1"]))
            prune_checkpoints(out, tcfg["keep_checkpoints"])
            ema_text = f", EMA top-1 {record['val_ema']['top1']:.2f}" if ema is not None else ""
            _say(f"epoch {epoch + 1}/{epochs}: train loss {record['train_loss']:.4f}, val top-1 {val['top1']:.2f} "
                 f"top-5 {val['top5']:.2f}{ema_text} (best {best_top1:.2f} at epoch {best_epoch}), "
                 f"{record['step_seconds'] * 1000:.0f} ms/step, {record['epoch_seconds']:.0f} s", dist)
        else:
            history.append(record)
    return TrainResult(out, last_epoch - start_epoch, best_top1, best_epoch, model, history, final_val)
