"""Training losses: cross-entropy against soft targets (Mixup/CutMix/label smoothing) or integer labels, and
DeiT's distillation loss around either.

Label smoothing and Mixup/CutMix are applied to the targets by the data pipeline (``src.data``), so the loss
only has to accept a target distribution. Logits are cast to float32 first (AMP O2 runs the network in
float16; the loss is reduced in float32).
"""
import mindspore as ms
from mindspore import Tensor, nn, ops

__all__ = ["SoftTargetCrossEntropy", "SparseCrossEntropy", "DistillationLoss", "create_loss"]


class SoftTargetCrossEntropy(nn.Cell):
    """``mean_i sum_c -t[i, c] * log_softmax(logits)[i, c]`` for float32 targets ``[B, K]``."""

    def construct(self, logits: Tensor, targets: Tensor) -> Tensor:
        logp = ops.log_softmax(logits.astype(ms.float32), -1)
        return (-targets * logp).sum(-1).mean()


class SparseCrossEntropy(nn.Cell):
    """``mean_i -log_softmax(logits)[i, y_i]`` for int32 labels ``[B]`` (all target augmentation off)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def construct(self, logits: Tensor, labels: Tensor) -> Tensor:
        logp = ops.log_softmax(logits.astype(ms.float32), -1)
        onehot = ops.one_hot(labels, self.num_classes, Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))
        return (-onehot * logp).sum(-1).mean()


def create_loss(soft_targets: bool, num_classes: int) -> nn.Cell:
    """The loss matching the training pipeline's targets (``DatasetInfo.soft_targets``)."""
    return SoftTargetCrossEntropy() if soft_targets else SparseCrossEntropy(num_classes)


class DistillationLoss(nn.Cell):
    """DeiT's distillation loss: ``(1 - alpha) * base(logits, targets) + alpha * kd(kd_logits, teacher_logits)``.

    ``base`` is the label loss (:func:`create_loss`). ``kd`` is, for ``kind="soft"``, ``tau^2`` times the
    KL divergence of ``softmax(kd_logits / tau)`` from ``softmax(teacher_logits / tau)`` summed over the batch
    and divided by batch x classes (DeiT divides by the number of logits, not of images), and for
    ``kind="hard"`` the cross-entropy of ``kd_logits`` with the teacher's top-1 class (no smoothing).
    ``kd_logits`` is the distillation head of a distilled DeiT, else the class head (``logits`` itself).
    """

    def __init__(self, base: nn.Cell, kind: str, alpha: float, tau: float):
        super().__init__()
        if kind not in ("soft", "hard"):
            raise ValueError(f"DistillationLoss: kind must be 'soft' or 'hard', got {kind!r}")
        self.base, self.hard = base, kind == "hard"
        self.alpha, self.tau = float(alpha), float(tau)

    def construct(self, logits: Tensor, kd_logits: Tensor, teacher_logits: Tensor, targets: Tensor) -> Tensor:
        student = kd_logits.astype(ms.float32)
        teacher = teacher_logits.astype(ms.float32)
        if self.hard:
            top1 = ops.one_hot(ops.argmax(teacher, -1), student.shape[-1], Tensor(1.0, ms.float32),
                               Tensor(0.0, ms.float32))
            kd = (-top1 * ops.log_softmax(student, -1)).sum(-1).mean()
        else:
            log_t = ops.log_softmax(teacher / self.tau, -1)
            log_s = ops.log_softmax(student / self.tau, -1)
            kl = (ops.exp(log_t) * (log_t - log_s)).sum()
            kd = kl * (self.tau * self.tau) / (student.shape[0] * student.shape[1])
        return self.base(logits, targets) * (1.0 - self.alpha) + kd * self.alpha
