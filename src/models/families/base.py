"""What a family of registered models is: one model class (numerics, parameter names), one kind of public
weights. The registry (``src.models.register_model``) stores a family object per model; the checkpoint reader
(``src.io.checkpoint``) and the model table (``src.analysis.zoo``) ask it instead of branching on classes or names."""
import re

import numpy as np

from ..vit import VisionTransformer, layer_class

__all__ = ["ModelFamily", "norm_param_names"]

# An entry of a norm's parameter: ``norm.weight``, ``blocks.3.norm1.bias``, ``fc_norm.gamma``, ``norm_pre.beta``.
_NORM_ENTRY = re.compile(r"(?:^|\.)\w*norm\w*\.(\w+)$")


def norm_param_names(state: dict[str, np.ndarray]) -> set[str]:
    """The parameter names of the norms in a state dict (``{"weight", "bias"}`` for timm's)."""
    return {m.group(1) for m in map(_NORM_ENTRY.search, state) if m}


class ModelFamily:
    """A family: subclasses set the class attributes and override the methods where their models differ.

    ``name`` is what the model table and messages call it; ``model_cls`` builds its models; ``weights`` (where
    its public weights come from; ``{tag}`` is filled by :meth:`public_weights`), ``reader`` (what
    ``convert.py`` reads of them) and ``ppt`` (where its configs' PPT settings come from) are its row text in
    the model table; ``release_renames`` maps the entry names of its PyTorch release files to the model's
    (``(pattern, replacement)`` pairs for ``re.sub``).
    """

    name: str
    model_cls: type[VisionTransformer] = VisionTransformer
    weights: str
    reader: str
    ppt: str
    release_renames: tuple[tuple[str, str], ...] = ()

    def __repr__(self) -> str:
        return f"<model family {self.name}>"

    def recognizes(self, state: dict[str, np.ndarray]) -> bool:
        """Whether ``state`` can hold this family's weights: it has norm entries and they carry only names of
        the family's norm class (timm's ``weight``/``bias``, mindcv's ``gamma``/``beta``)."""
        names = norm_param_names(state)
        return bool(names) and names <= set(layer_class(self.model_cls.norm_layer).param_names)

    def check_state(self, state: dict[str, np.ndarray], source: str) -> None:
        """Refuse, in one line naming ``source``, weights of this family built with an option the model class
        does not implement (nothing is refused by default)."""

    def rename_release_entries(self, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``state`` with this family's release-file entry names replaced by the model's (same order)."""
        for pattern, replacement in self.release_renames:
            state = {re.sub(pattern, replacement, name): value for name, value in state.items()}
        return state

    def public_weights(self, model: str) -> str:
        """Where the public weights of the registered ``model`` come from (the model table's column)."""
        return self.weights

    def ppt_origin(self, model: str) -> str:
        """Where the PPT setting of ``config/<model>.yaml`` comes from (the model table's column)."""
        return self.ppt
