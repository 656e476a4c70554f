"""Token-reduction policies: how a PP block removes ``r`` tokens, and what that costs.

A policy is a Cell class registered by name. A model builds one per PP block (``cls(r, num_protected,
threshold)``) and hands it to the block, the way timm passes ``attn_layer``: a block never names an
algorithm. Every policy maps ``(x, size, attn, v, metric, source)`` -- the tokens after the attention
residual, their sizes, the attention map, values, pooling metric and optional token sources -- to
``(x, size, source, pooled, svar)`` with exactly ``N - r`` tokens, where ``pooled`` (``[B]`` bool) and
``svar`` (``[B]`` float32) are the per-image decision and score variance (False and 0 where a policy has
none: see ``reports_variance``). :meth:`TokenReducer.macs` is the cost of one reduction in the convention
of :mod:`src.flops`.
"""
from typing import ClassVar

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from .functional import as_dtype, importance_scores, pool, prune, prune_or_pool, score_variance

__all__ = ["TokenReducer", "register_policy", "get_policy", "list_policies", "PPTReducer", "PruneReducer",
           "PoolReducer", "KeepFirstReducer", "TunablePPTReducer"]

ReducerOutput = tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor]
_POLICIES: dict[str, type["TokenReducer"]] = {}


class TokenReducer(nn.Cell):
    """Base of the policies: holds ``r`` (already clamped), the protected prefix count and the threshold."""

    name: ClassVar[str] = ""
    uses_threshold: ClassVar[bool] = False  # whether the config's threshold means anything to it
    reports_variance: ClassVar[bool] = True  # whether ``svar`` is a measured score variance

    def __init__(self, r: int, num_protected: int, threshold: float = 0.0):
        super().__init__()
        self.r, self.num_protected, self.threshold = int(r), int(num_protected), float(threshold)

    @staticmethod
    def macs(num_tokens: int, embed_dim: int, head_dim: int) -> int:
        """MACs of one reduction of ``num_tokens`` tokens of width ``embed_dim`` (``head_dim`` per head)."""
        raise NotImplementedError


def register_policy(cls: type[TokenReducer]) -> type[TokenReducer]:
    """Class decorator: make ``cls`` selectable by ``cls.name`` (``ppt.policy`` in a config)."""
    if not cls.name or cls.name in _POLICIES:
        raise ValueError(f"token-reduction policy name {cls.name!r} is empty or taken")
    _POLICIES[cls.name] = cls
    return cls


def list_policies() -> list[str]:
    """Registered policy names, in registration order (the default, ``ppt``, first)."""
    return list(_POLICIES)


def get_policy(name: str) -> type[TokenReducer]:
    if name not in _POLICIES:
        raise ValueError(f"unknown token-reduction policy '{name}'; known: {', '.join(_POLICIES)}")
    return _POLICIES[name]


def _score_macs(num_tokens: int) -> int:
    return num_tokens  # class attention x value norm, one product per token


def _pool_macs(num_tokens: int, embed_dim: int, head_dim: int) -> int:
    metric = num_tokens * head_dim  # keys averaged over heads
    similarity = ((num_tokens + 1) // 2) * (num_tokens // 2) * head_dim  # even tokens @ odd tokens^T
    weighting = num_tokens * embed_dim  # x * size before the size-weighted merge
    return metric + similarity + weighting


def _all(flag: bool, like: Tensor) -> Tensor:
    return ops.fill(ms.bool_, (like.shape[0],), flag)


@register_policy
class PPTReducer(TokenReducer):
    """PPT: per image, prune when the score variance reaches ``threshold``, else pool (both branches are
    computed for the whole batch and one is picked per image, so shapes stay static)."""

    name = "ppt"
    uses_threshold = True

    def construct(self, x: Tensor, size: Tensor, attn: Tensor, v: Tensor, metric: Tensor,
                  source: Tensor | None = None) -> ReducerOutput:
        return prune_or_pool(x, size, attn, v, metric, self.r, self.threshold, self.num_protected, source)

    @staticmethod
    def macs(num_tokens: int, embed_dim: int, head_dim: int) -> int:
        # Costed as the pooling branch, the dearer one, so PPT figures are upper bounds for any image.
        return _score_macs(num_tokens) + _pool_macs(num_tokens, embed_dim, head_dim)


class TunablePPTReducer(PPTReducer):
    """PPT whose threshold is a float32 Parameter, not a constant of the graph: ``set_threshold`` changes it
    and the same compiled graph runs on (threshold calibration compiles once for every candidate). Same
    outputs as :class:`PPTReducer` at the same threshold. Not a registered policy and never saved: a
    calibration builds it from a model's ``PPTReducer`` (``from_reducer``) after the weights are loaded, so
    checkpoints and the exported graphs keep their keys."""

    def __init__(self, r: int, num_protected: int, threshold: float = 0.0):
        super().__init__(r, num_protected, threshold)
        self.runtime_threshold = Parameter(Tensor(self.threshold, ms.float32), requires_grad=False)

    @classmethod
    def from_reducer(cls, reducer: PPTReducer) -> "TunablePPTReducer":
        """The tunable twin of ``reducer`` (same r, protected tokens and threshold). Name its Parameter after
        attaching it to the model: attaching renames it ``reducer.runtime_threshold``, the same in every
        block, and graph mode's gradients reject two parameters of one name."""
        return cls(reducer.r, reducer.num_protected, reducer.threshold)

    def set_threshold(self, threshold: float) -> None:
        self.threshold = float(threshold)
        self.runtime_threshold.set_data(Tensor(self.threshold, ms.float32))

    def construct(self, x: Tensor, size: Tensor, attn: Tensor, v: Tensor, metric: Tensor,
                  source: Tensor | None = None) -> ReducerOutput:
        return prune_or_pool(x, size, attn, v, metric, self.r, self.runtime_threshold, self.num_protected, source)


@register_policy
class PruneReducer(TokenReducer):
    """Prune only (EViT-style top-k by PPT's importance score): the pooling branch is never computed. Gives
    the logits of ``ppt`` with threshold 0."""

    name = "prune"

    def construct(self, x: Tensor, size: Tensor, attn: Tensor, v: Tensor, metric: Tensor,
                  source: Tensor | None = None) -> ReducerOutput:
        scores = importance_scores(attn, v, self.num_protected)
        svar = score_variance(scores, self.num_protected)
        x, size, source = prune(x, as_dtype(size, ms.float32), scores, self.r, source)
        return x, size, source, _all(False, x), svar

    @staticmethod
    def macs(num_tokens: int, embed_dim: int, head_dim: int) -> int:
        return _score_macs(num_tokens)


@register_policy
class PoolReducer(TokenReducer):
    """Pool only (ToMe's bipartite merging with size-weighted averages): no importance score, no pruning
    branch. Gives the logits of ``ppt`` with a threshold above every variance (1e9)."""

    name = "pool"
    reports_variance = False

    def construct(self, x: Tensor, size: Tensor, attn: Tensor, v: Tensor, metric: Tensor,
                  source: Tensor | None = None) -> ReducerOutput:
        x, size, source = pool(x, as_dtype(size, ms.float32), metric, self.r, self.num_protected, source)
        return x, size, source, _all(True, x), ops.zeros((x.shape[0],), ms.float32)

    @staticmethod
    def macs(num_tokens: int, embed_dim: int, head_dim: int) -> int:
        return _pool_macs(num_tokens, embed_dim, head_dim)


@register_policy
class KeepFirstReducer(TokenReducer):
    """A measurement baseline, not a method: keeps the first ``N - r`` tokens with a plain slice. Token counts,
    and so the cost of everything else, are those of the other policies; timing a model with it against
    the same model with ``ppt`` gives the reduction's own cost (``benchmark.py``). Its outputs are meaningless."""

    name = "keep_first"
    reports_variance = False

    def construct(self, x: Tensor, size: Tensor, attn: Tensor, v: Tensor, metric: Tensor,
                  source: Tensor | None = None) -> ReducerOutput:
        n = x.shape[1] - self.r
        kept_source = None if source is None else source[:, :n]
        return x[:, :n], as_dtype(size[:, :n], ms.float32), kept_source, _all(False, x), ops.zeros((x.shape[0],),
                                                                                                   ms.float32)

    @staticmethod
    def macs(num_tokens: int, embed_dim: int, head_dim: int) -> int:
        return 0
