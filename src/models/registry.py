"""Model registry in the timm / mindcv style: ``create_model(name, ...)``, ``list_models()``, ``model_spec(name)``.

Each registered name maps to one :class:`ViTSpec`, its family (models of one family share numerics, parameter
names and data settings: DeiT, DeiT III, timm ViT, mindcv ViT) and the model class that builds it; a new model is
one ``register_model`` call.
"""
from collections.abc import Mapping
from typing import Any

from ..token_reduction import PPTSetting
from .mindcv_vit import MindcvVisionTransformer
from .spec import ViTSpec
from .vit import VisionTransformer

__all__ = ["register_model", "list_models", "model_spec", "model_class", "model_family", "create_model"]

_MODELS: dict[str, tuple[ViTSpec, str, type[VisionTransformer]]] = {}


def register_model(name: str, spec: ViTSpec, family: str,
                   model_cls: type[VisionTransformer] = VisionTransformer) -> None:
    if name in _MODELS:
        raise ValueError(f"model '{name}' is registered already")
    _MODELS[name] = (spec, family, model_cls)


for _size, _dim, _heads in (("tiny", 192, 3), ("small", 384, 6), ("base", 768, 12)):
    register_model(f"deit_{_size}_patch16_224", ViTSpec(embed_dim=_dim, num_heads=_heads), "DeiT")
    register_model(f"deit_{_size}_distilled_patch16_224", ViTSpec(embed_dim=_dim, num_heads=_heads, distilled=True),
                   "DeiT")
register_model("deit_base_patch16_384", ViTSpec(img_size=384), "DeiT")
register_model("deit_base_distilled_patch16_384", ViTSpec(img_size=384, distilled=True), "DeiT")
# DeiT III (timm's deit3_*): LayerScale initialised to 1e-6 and the position embedding on the patches only.
for _size, _dim, _depth, _heads, _imgs in (("small", 384, 12, 6, (224, 384)), ("medium", 512, 12, 8, (224,)),
                                           ("base", 768, 12, 12, (224, 384)), ("large", 1024, 24, 16, (224, 384))):
    for _img in _imgs:
        register_model(f"deit3_{_size}_patch16_{_img}", ViTSpec(
            img_size=_img, embed_dim=_dim, depth=_depth, num_heads=_heads, layer_scale_init=1e-6,
            no_embed_class=True), "DeiT III")

# timm's ViTs (Dosovitskiy et al.; the AugReg weights of Steiner et al.): DeiT's block and parameter names, other
# sizes and patch sizes. The (size, patch, img) triples are the ones timm defines.
_VIT_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}
for _size, _patch, _img in (("tiny", 16, 224), ("tiny", 16, 384), ("small", 16, 224), ("small", 16, 384),
                            ("small", 32, 224), ("small", 32, 384), ("base", 16, 224), ("base", 16, 384),
                            ("base", 32, 224), ("base", 32, 384), ("large", 16, 224), ("large", 16, 384),
                            ("large", 32, 224), ("large", 32, 384)):
    _dim, _depth, _heads = _VIT_SIZES[_size]
    register_model(f"vit_{_size}_patch{_patch}_{_img}",
                   ViTSpec(img_size=_img, patch_size=_patch, embed_dim=_dim, depth=_depth, num_heads=_heads),
                   "timm ViT")

# mindcv's ViTs, with mindcv's names, numerics and parameter names (src/models/mindcv_vit.py): their checkpoints
# (mindcv publishes vit_b_32_224, vit_l_16_224 and vit_l_32_224) load one to one.
for _size, _patch, _img in (("b", 16, 224), ("b", 16, 384), ("l", 16, 224), ("l", 16, 384), ("b", 32, 224),
                            ("b", 32, 384), ("l", 32, 224)):
    _dim, _depth, _heads = _VIT_SIZES["base" if _size == "b" else "large"]
    register_model(f"vit_{_size}_{_patch}_{_img}",
                   ViTSpec(img_size=_img, patch_size=_patch, embed_dim=_dim, depth=_depth, num_heads=_heads),
                   "mindcv ViT", MindcvVisionTransformer)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_MODELS)


def model_spec(name: str) -> ViTSpec:
    """The registered architecture of ``name``."""
    if name not in _MODELS:
        raise ValueError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    return _MODELS[name][0]


def model_class(name: str) -> type[VisionTransformer]:
    """The class that builds ``name`` (it fixes the numerics and parameter names its weights need)."""
    model_spec(name)
    return _MODELS[name][2]


def model_family(name: str) -> str:
    """The family of ``name`` (``DeiT``, ``DeiT III``, ``timm ViT``, ``mindcv ViT``)."""
    model_spec(name)
    return _MODELS[name][1]


def create_model(name: str, num_classes: int = 1000, ppt: None | PPTSetting | Mapping[str, Any] = None,
                 drop_path_rate: float = 0.0, **overrides: Any) -> VisionTransformer:
    """Build a registered model, optionally with token reduction.

    ``ppt``: None (no reduction), a :class:`PPTSetting`, or a dict with its keys (``r``, ``layers``, and
    ``threshold``, ``prop_attn``, ``policy``). ``overrides`` change the architecture (the fields of
    ``src.models.ARCH_OVERRIDES``). Weights are randomly initialised; see ``src.checkpoint``.
    """
    spec = model_spec(name).replace(**overrides)
    return model_class(name)(spec, num_classes=num_classes, ppt=ppt, drop_path_rate=drop_path_rate)
