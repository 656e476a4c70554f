"""DeiT's optimiser: AdamW with parameter groups and a per-step warm-up + cosine learning-rate schedule.

MindSpore has no ``nn.AdamW``; ``nn.AdamWeightDecay`` applies the same decoupled, lr-scaled weight decay
(``p -= lr * (wd * p + m / (sqrt(v) + eps))``) but without Adam's bias correction. The correction is folded
into the per-step learning rate (:func:`adam_bias_correction`), which makes the adaptive part AdamW's (eps
then acts as ``eps * sqrt(1 - beta2^t)``); the weight-decay term is scaled by the same factor, which
differs from 1 only in the first few thousand steps, during warm-up, when the learning rate is small.
"""
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from mindspore import Parameter, nn

__all__ = ["LR_REFERENCE_BATCH", "NO_DECAY_NAMES", "scaled_lr", "param_groups", "lr_schedule",
           "adam_bias_correction", "create_optimizer"]

LR_REFERENCE_BATCH = 512  # DeiT: lr = base_lr * global_batch / 512
# Parameters that get no weight decay besides norms and biases (every parameter with ndim <= 1).
NO_DECAY_NAMES = ("pos_embed", "cls_token", "dist_token")


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """DeiT's linear scaling rule: the peak learning rate for ``global_batch`` images per step."""
    return base_lr * global_batch / LR_REFERENCE_BATCH


def _no_decay(param: Parameter) -> bool:
    return param.ndim <= 1 or param.name.split(".")[-1] in NO_DECAY_NAMES


def param_groups(params: Sequence[Parameter], weight_decay: float) -> list[dict[str, Any]]:
    """Two ``nn.Optimizer`` groups: weight decay on matrices, none on norms, biases, pos_embed and tokens."""
    decay = [p for p in params if not _no_decay(p)]
    no_decay = [p for p in params if _no_decay(p)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_schedule(peak_lr: float, min_lr: float, warmup_lr: float, epochs: int, warmup_epochs: int,
                steps_per_epoch: int) -> np.ndarray:
    """Learning rate of every step (float32 ``[epochs * steps_per_epoch]``).

    Linear warm-up from ``warmup_lr`` (step 0) towards ``peak_lr`` over ``warmup_epochs`` epochs, then a half
    cosine from ``peak_lr`` down to ``min_lr`` (reached one step after the last).
    """
    total = epochs * steps_per_epoch
    warmup = warmup_epochs * steps_per_epoch
    if steps_per_epoch < 1 or epochs < 1 or not 0 <= warmup < total:
        raise ValueError(f"lr_schedule: need steps_per_epoch >= 1, epochs >= 1 and 0 <= warmup_epochs < epochs, "
                         f"got {steps_per_epoch}, {epochs}, {warmup_epochs}")
    step = np.arange(total, dtype=np.float64)
    ramp = warmup_lr + (peak_lr - warmup_lr) * step / max(warmup, 1)
    progress = (step - warmup) / (total - warmup)
    cosine = min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + np.cos(math.pi * progress))
    return np.where(step < warmup, ramp, cosine).astype(np.float32)


def adam_bias_correction(num_steps: int, betas: tuple[float, float]) -> np.ndarray:
    """``sqrt(1 - beta2^t) / (1 - beta1^t)`` for t = 1..num_steps: multiplies the lr of an uncorrected Adam."""
    t = np.arange(1, num_steps + 1, dtype=np.float64)
    return (np.sqrt(1.0 - betas[1] ** t) / (1.0 - betas[0] ** t)).astype(np.float32)


def create_optimizer(params: Sequence[Parameter], train_cfg: Mapping[str, Any], steps_per_epoch: int,
                     global_batch: int) -> tuple[nn.AdamWeightDecay, np.ndarray]:
    """AdamW (``nn.AdamWeightDecay`` with the two groups) and the nominal per-step lr schedule it follows."""
    peak = scaled_lr(train_cfg["base_lr"], global_batch)
    schedule = lr_schedule(peak, train_cfg["min_lr"], train_cfg["warmup_lr"], train_cfg["epochs"],
                           train_cfg["warmup_epochs"], steps_per_epoch)
    betas = tuple(train_cfg["betas"])
    effective = (schedule * adam_bias_correction(len(schedule), betas)).tolist()
    optimizer = nn.AdamWeightDecay(param_groups(params, train_cfg["weight_decay"]), learning_rate=effective,
                                   beta1=betas[0], beta2=betas[1], eps=train_cfg["eps"])
    return optimizer, schedule
