"""The PPT setting of a model: which blocks reduce tokens, how many, and with which policy.

One frozen dataclass, produced by the config (``src.config.ppt_setting``), accepted by
``src.models.create_model`` (a dict with the same keys works too), stored by the model (``model.ppt``) and
read by the MACs counter, the budget search, the sweep and the exporters.
"""
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .functional import _is_int, r_per_layer, token_schedule
from .policies import get_policy

__all__ = ["PPTSetting"]

_FIELDS = ("policy", "r", "layers", "threshold", "prop_attn")


@dataclass(frozen=True)
class PPTSetting:
    """``r`` tokens removed at each of ``layers`` (0-based blocks) by ``policy``.

    ``r`` is one int for every PP block or one value per entry of ``layers``; it is clamped per block to
    ``(N - 1) // 2`` when a model is built. ``threshold`` is read by the ``ppt`` policy only (score variance
    below it: pool, else prune) and must then be given. ``prop_attn``: proportional attention (``+ log(size)``
    of the key token) in the blocks after the first PP block. Layers are kept sorted, with their r.
    """

    r: int | tuple[int, ...]
    layers: tuple[int, ...]
    threshold: float | None = None
    prop_attn: bool = True
    policy: str = "ppt"

    def __post_init__(self) -> None:
        layers = self.layers
        if not isinstance(layers, Sequence) or not all(_is_int(i) and i >= 0 for i in layers):
            raise ValueError(f"ppt layers: expected a list of block indices >= 0, got {layers!r}")
        try:
            rs = r_per_layer(self.r, layers)
        except ValueError as e:
            raise ValueError(f"ppt r: {e}") from None
        if not _is_int(self.r):
            pairs = sorted(zip(layers, rs))
            object.__setattr__(self, "r", tuple(v for _, v in pairs))
            layers = [i for i, _ in pairs]
        object.__setattr__(self, "layers", tuple(sorted(layers)))
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"ppt layers: expected distinct block indices, got {list(layers)}")
        policy = get_policy(self.policy)
        if self.threshold is not None:
            if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or \
                    not self.threshold >= 0:
                raise ValueError(f"ppt threshold: expected a number >= 0, got {self.threshold!r}")
            object.__setattr__(self, "threshold", float(self.threshold))
        elif policy.uses_threshold:
            raise ValueError(f"ppt threshold: the '{self.policy}' policy needs one (a score variance >= 0)")
        if not isinstance(self.prop_attn, bool):
            raise ValueError(f"ppt prop_attn: expected true or false, got {self.prop_attn!r}")

    @classmethod
    def coerce(cls, value: "PPTSetting | Mapping[str, Any] | None") -> "PPTSetting | None":
        """None, a setting, or a dict with its keys (``r`` and ``layers`` required) -> a setting or None."""
        if value is None or isinstance(value, PPTSetting):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"ppt: expected a PPTSetting or a dict, got a {type(value).__name__}")
        unknown, missing = sorted(set(value) - set(_FIELDS)), sorted({"r", "layers"} - set(value))
        if unknown or missing:
            raise ValueError(f"ppt: unknown keys {unknown}, missing keys {missing}; keys: {', '.join(_FIELDS)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})

    def r_list(self) -> tuple[int, ...]:
        """One r per PP layer (before clamping)."""
        return r_per_layer(self.r, self.layers)

    def schedule(self, num_tokens: int, depth: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Tokens after every block, and the clamped r of every PP layer (see ``token_schedule``)."""
        return token_schedule(num_tokens, depth, self.layers, self.r_list())

    def replace(self, **changes: Any) -> "PPTSetting":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML values (r an int or a list)."""
        r = list(self.r) if isinstance(self.r, tuple) else self.r
        return {"policy": self.policy, "r": r, "layers": list(self.layers), "threshold": self.threshold,
                "prop_attn": self.prop_attn}
