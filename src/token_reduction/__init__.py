"""Token reduction: the PPT algorithm as pure functions (:mod:`.functional`), the policies a PP block can
use, registered by name (:mod:`.policies`: ``ppt``, ``prune``, ``pool``, ``keep_first``), and the typed
setting that says where and how a model reduces tokens (:class:`PPTSetting`)."""
from .functional import (
    clamp_r,
    importance_scores,
    pool,
    prune,
    prune_or_pool,
    r_per_layer,
    score_variance,
    token_schedule,
)
from .policies import TokenReducer, TunablePPTReducer, get_policy, list_policies, register_policy
from .setting import PPTSetting

__all__ = ["clamp_r", "importance_scores", "pool", "prune", "prune_or_pool", "r_per_layer", "score_variance",
           "token_schedule", "TokenReducer", "TunablePPTReducer", "get_policy", "list_policies", "register_policy",
           "PPTSetting"]
