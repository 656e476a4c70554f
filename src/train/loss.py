"""Training losses: cross-entropy against soft targets (Mixup/CutMix/label smoothing) or integer labels.

Label smoothing and Mixup/CutMix are applied to the targets by the data pipeline (``src.data``), so the loss
only has to accept a target distribution. Logits are cast to float32 first (AMP O2 runs the network in
float16; the loss is reduced in float32).
"""
import mindspore as ms
from mindspore import Tensor, nn, ops

__all__ = ["SoftTargetCrossEntropy", "SparseCrossEntropy", "create_loss"]


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
