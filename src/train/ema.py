"""Exponential moving average of the model weights (DeiT's ``--model-ema``), updated inside the train step."""
from collections.abc import Sequence

from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

__all__ = ["EMA_PREFIX", "ModelEMA"]

EMA_PREFIX = "ema."

_ema_update = ops.MultitypeFuncGraph("ema_update")


@_ema_update.register("Number", "Tensor", "Tensor")
def _update_one(decay: float, shadow: Parameter, weight: Tensor) -> Tensor:
    return ops.assign(shadow, shadow * decay + weight.astype(shadow.dtype) * (1.0 - decay))


class ModelEMA(nn.Cell):
    """Shadow copies ``ema.<name>`` of ``params``; ``construct()`` applies
    ``ema = decay * ema + (1 - decay) * weight`` to all of them (call it after each optimiser step)."""

    def __init__(self, params: Sequence[Parameter], decay: float):
        super().__init__(auto_prefix=False)  # keep the parameters' own names
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ModelEMA: decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.weights = ParameterTuple(params)
        # The names at creation: wrapping the model later (e.g. in PPTStats) may prefix Parameter.name.
        self.names = tuple(p.name for p in params)
        self.shadows = ParameterTuple(
            Parameter(p.value().copy(), name=EMA_PREFIX + p.name, requires_grad=False) for p in params)
        self.hyper_map = ops.HyperMap()

    def construct(self) -> Tensor:
        return self.hyper_map(ops.partial(_update_one, self.decay), self.shadows, self.weights)

    def shadow_by_name(self) -> dict[str, Parameter]:
        """``{weight name (as when this EMA was created): shadow Parameter}``."""
        return dict(zip(self.names, self.shadows))
