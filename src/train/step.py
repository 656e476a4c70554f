"""One compiled training step: forward + loss, gradients, (data-parallel mean), loss-scale check, global-norm
clipping, AdamW update and EMA update.

``TrainOneStepWithLossScaleCell`` does not run on CPU, so this is the same logic written out with
``ms.amp.DynamicLossScaler`` and ``ms.amp.all_finite``. The optimiser and EMA updates are skipped when any
gradient (or the loss) is not finite; the caller decides what a skipped step means (a dynamic loss scale
just lowered the scale; without loss scaling it is a divergence).
"""

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.communication import get_group_size

from .ema import ModelEMA

__all__ = ["TrainStep", "global_norm", "clip_by_global_norm", "resolve_precision"]

# Where "auto" precision means a float16 network: the devices with fast float16 kernels.
_FLOAT16_DEVICES = ("Ascend", "GPU")


def resolve_precision(amp_level: str, loss_scale: str, device_target: str) -> tuple[str, str]:
    """The AMP level and loss scaling a run uses on ``device_target``.

    ``auto`` AMP is O2 (float16 network, float32 loss and optimiser state) on Ascend and GPU and O0 (float32)
    on CPU, whose float16 kernels are slow or missing; ``auto`` loss scaling is dynamic whenever the network
    runs in float16, where small gradients would underflow otherwise.
    """
    level = ("O2" if device_target in _FLOAT16_DEVICES else "O0") if amp_level == "auto" else amp_level
    scale = ("dynamic" if level != "O0" else "none") if loss_scale == "auto" else loss_scale
    if level != "O0" and scale == "none":
        raise ValueError(f"train.amp_level {amp_level} runs the network in float16 on {device_target}, which needs "
                         f"loss scaling; train.loss_scale is none")
    return level, scale

_unscale = ops.MultitypeFuncGraph("unscale")
_scale_by = ops.MultitypeFuncGraph("scale_by")
_square_sum = ops.MultitypeFuncGraph("square_sum")


@_unscale.register("Tensor", "Tensor")
def _unscale_one(scale: Tensor, grad: Tensor) -> Tensor:
    return grad.astype(ms.float32) / scale


@_scale_by.register("Tensor", "Tensor")
def _scale_one(factor: Tensor, grad: Tensor) -> Tensor:
    return grad * factor


@_square_sum.register("Tensor")
def _square_sum_one(grad: Tensor) -> Tensor:
    return (grad.astype(ms.float32) ** 2).sum()


def global_norm(grads: tuple[Tensor, ...]) -> Tensor:
    """L2 norm of all gradients together (float32 scalar)."""
    return ops.sqrt(ops.addn(ops.HyperMap()(_square_sum, grads)))


def clip_by_global_norm(grads: tuple[Tensor, ...], max_norm: float, norm: Tensor) -> tuple[Tensor, ...]:
    """Scale ``grads`` by ``min(1, max_norm / norm)`` (torch's ``clip_grad_norm_``, eps 1e-6)."""
    factor = ops.minimum(Tensor(1.0, ms.float32), max_norm / (norm + 1e-6))
    return ops.HyperMap()(ops.partial(_scale_by, factor), grads)


class TrainStep(nn.Cell):
    """``construct(images, targets) -> (loss, finite, grad_norm)`` runs one step.

    Args:
        net_with_loss: ``net_with_loss(images, targets) -> scalar loss`` (``nn.WithLossCell(model, loss_fn)``, or
            a ``DistillationNet`` that also runs a frozen teacher); gradients are taken for ``optimizer.parameters``.
        optimizer: updates ``optimizer.parameters`` from gradients.
        scaler: dynamic loss scaler, or None (loss scale 1: any non-finite gradient is reported, not skipped
            silently: ``finite`` is False and nothing is updated).
        clip_grad: maximum global gradient norm; 0 disables clipping. ``grad_norm`` is the norm before
            clipping (of the unscaled, averaged gradients).
        ema: EMA of the weights, updated after every applied step, or None.
        distributed: average gradients over the data-parallel group (and agree on ``finite``).
    """

    def __init__(self, net_with_loss: nn.Cell, optimizer: nn.Optimizer,
                 scaler: ms.amp.DynamicLossScaler | None = None, clip_grad: float = 0.0,
                 ema: ModelEMA | None = None, distributed: bool = False):
        super().__init__(auto_prefix=False)  # keep the parameters' own names
        self.net = net_with_loss
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.scaler = scaler
        if scaler is not None:
            # Registered on the cell so that they are saved and restored with the training state.
            self.loss_scale = scaler.scale_value
            self.loss_scale_counter = scaler.counter
        else:
            self.loss_scale = Parameter(Tensor(1.0, ms.float32), name="loss_scale", requires_grad=False)
        self.clip_grad = float(clip_grad)
        self.ema = ema
        self.distributed = distributed
        if distributed:
            self.grad_reducer = nn.DistributedGradReducer(self.weights, mean=True, degree=get_group_size())
            self.all_reduce = ops.AllReduce()
        self.hyper_map = ops.HyperMap()

    def construct(self, images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        loss = self.net(images, targets)
        sens = ops.ones_like(loss) * self.loss_scale.astype(loss.dtype)
        grads = self.grad(self.net, self.weights)(images, targets, sens)
        if self.distributed:
            grads = self.grad_reducer(grads)
        grads = self.hyper_map(ops.partial(_unscale, self.loss_scale), grads)
        finite = ops.logical_and(ms.amp.all_finite(grads), ops.isfinite(loss))
        if self.distributed:
            # Every rank must take the same branch; a rank's non-finite loss would also reach the mean grads.
            bad = self.all_reduce(ops.logical_not(finite).astype(ms.float32))
            finite = bad == 0
        if self.scaler is not None:
            self.scaler.adjust(finite)
        norm = global_norm(grads)
        if self.clip_grad > 0:
            grads = clip_by_global_norm(grads, self.clip_grad, norm)
        if finite:
            loss = ops.depend(loss, self.optimizer(grads))
            if self.ema is not None:
                loss = ops.depend(loss, self.ema())
        return loss, finite, norm
