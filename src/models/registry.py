"""Model registry in the timm / mindcv style: ``create_model(name, ...)``, ``list_models()``, ``model_spec(name)``.

Each registered name maps to one :class:`ViTSpec` and its family (``src.models.families``: models of one family
share their model class, numerics, parameter names, checkpoint handling and kind of public weights: DeiT,
DeiT III, timm ViT, mindcv ViT); a new model is one ``register_model`` call, a new family one module there.
"""
from collections.abc import Mapping
from typing import Any

from ..token_reduction import PPTSetting
from .families import ModelFamily
from .families.deit import DEIT
from .families.deit3 import DEIT3
from .families.mindcv import MINDCV_VIT
from .families.timm_vit import TIMM_VIT
from .spec import ViTSpec
from .vit import VisionTransformer

__all__ = ["SIZES", "register_model", "list_models", "list_families", "model_spec", "model_class", "model_family",
           "create_model"]

# (embed_dim, depth, num_heads) of the named sizes, as timm defines them
SIZES: dict[str, tuple[int, int, int]] = {"tiny": (192, 12, 3), "small": (384, 12, 6), "medium": (512, 12, 8),
                                          "base": (768, 12, 12), "large": (1024, 24, 16)}

_MODELS: dict[str, tuple[ViTSpec, ModelFamily]] = {}


def register_model(name: str, spec: ViTSpec, family: ModelFamily) -> None:
    if name in _MODELS:
        raise ValueError(f"model '{name}' is registered already")
    if not isinstance(family, ModelFamily):
        raise TypeError(f"register_model('{name}'): family must be a src.models.families.ModelFamily, "
                        f"got {family!r}")
    _MODELS[name] = (spec, family)


def _sized(size: str, **fields: Any) -> ViTSpec:
    embed_dim, depth, num_heads = SIZES[size]
    return ViTSpec(embed_dim=embed_dim, depth=depth, num_heads=num_heads, **fields)


for _size in ("tiny", "small", "base"):
    register_model(f"deit_{_size}_patch16_224", _sized(_size), DEIT)
    register_model(f"deit_{_size}_distilled_patch16_224", _sized(_size, distilled=True), DEIT)
register_model("deit_base_patch16_384", _sized("base", img_size=384), DEIT)
register_model("deit_base_distilled_patch16_384", _sized("base", img_size=384, distilled=True), DEIT)
# DeiT III (timm's deit3_*): LayerScale initialised to 1e-6 and the position embedding on the patches only.
for _size, _imgs in (("small", (224, 384)), ("medium", (224,)), ("base", (224, 384)), ("large", (224, 384))):
    for _img in _imgs:
        register_model(f"deit3_{_size}_patch16_{_img}",
                       _sized(_size, img_size=_img, layer_scale_init=1e-6, no_embed_class=True), DEIT3)
# timm's ViTs: the (size, patch, img) triples timm defines.
for _size, _patch, _img in (("tiny", 16, 224), ("tiny", 16, 384), ("small", 16, 224), ("small", 16, 384),
                            ("small", 32, 224), ("small", 32, 384), ("base", 16, 224), ("base", 16, 384),
                            ("base", 32, 224), ("base", 32, 384), ("large", 16, 224), ("large", 16, 384),
                            ("large", 32, 224), ("large", 32, 384)):
    register_model(f"vit_{_size}_patch{_patch}_{_img}", _sized(_size, img_size=_img, patch_size=_patch), TIMM_VIT)
# mindcv's ViTs, with mindcv's names (b: base, l: large): their checkpoints (mindcv publishes vit_b_32_224,
# vit_l_16_224 and vit_l_32_224) load one to one.
for _size, _patch, _img in (("b", 16, 224), ("b", 16, 384), ("l", 16, 224), ("l", 16, 384), ("b", 32, 224),
                            ("b", 32, 384), ("l", 32, 224)):
    register_model(f"vit_{_size}_{_patch}_{_img}",
                   _sized("base" if _size == "b" else "large", img_size=_img, patch_size=_patch), MINDCV_VIT)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_MODELS)


def list_families() -> list[ModelFamily]:
    """The families of the registered models, each once, in registration order."""
    return list(dict.fromkeys(family for _, family in _MODELS.values()))


def model_spec(name: str) -> ViTSpec:
    """The registered architecture of ``name``."""
    if name not in _MODELS:
        raise ValueError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    return _MODELS[name][0]


def model_family(name: str) -> ModelFamily:
    """The family of ``name`` (its ``.name``: ``DeiT``, ``DeiT III``, ``timm ViT``, ``mindcv ViT``)."""
    model_spec(name)
    return _MODELS[name][1]


def model_class(name: str) -> type[VisionTransformer]:
    """The class that builds ``name`` (its family's: it fixes the numerics and parameter names its weights need)."""
    return model_family(name).model_cls


def create_model(name: str, num_classes: int = 1000, ppt: None | PPTSetting | Mapping[str, Any] = None,
                 drop_path_rate: float = 0.0, **overrides: Any) -> VisionTransformer:
    """Build a registered model, optionally with token reduction.

    ``ppt``: None (no reduction), a :class:`PPTSetting`, or a dict with its keys (``r``, ``layers``, and
    ``threshold``, ``prop_attn``, ``policy``). ``overrides`` change the architecture (the fields of
    ``src.models.ARCH_OVERRIDES``). Weights are randomly initialised; see ``src.io.checkpoint``.
    """
    spec = model_spec(name).replace(**overrides)
    return model_class(name)(spec, num_classes=num_classes, ppt=ppt, drop_path_rate=drop_path_rate)
