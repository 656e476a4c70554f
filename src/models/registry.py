"""Model registry in the timm / mindcv style: ``create_model(name, ...)`` and ``list_models()``."""
from typing import Any, Dict, List, Optional

from .vit import VisionTransformer

_ARCHS: Dict[str, Dict[str, Any]] = {}


def _register(name: str, img_size: int, embed_dim: int, depth: int, num_heads: int, distilled: bool) -> None:
    _ARCHS[name] = dict(img_size=img_size, patch_size=16, in_chans=3, embed_dim=embed_dim, depth=depth,
                        num_heads=num_heads, mlp_ratio=4.0, distilled=distilled)


for _size, _dim, _heads in (("tiny", 192, 3), ("small", 384, 6), ("base", 768, 12)):
    _register(f"deit_{_size}_patch16_224", 224, _dim, 12, _heads, False)
    _register(f"deit_{_size}_distilled_patch16_224", 224, _dim, 12, _heads, True)
_register("deit_base_patch16_384", 384, 768, 12, 12, False)
_register("deit_base_distilled_patch16_384", 384, 768, 12, 12, True)

_OVERRIDABLE = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "drop_path_rate")
_PPT_KEYS = {"r", "layers", "threshold", "prop_attn"}


def list_models() -> List[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_ARCHS)


def model_defaults(name: str) -> Dict[str, Any]:
    """The architecture of a registered model (img_size, patch_size, in_chans, embed_dim, depth, ...)."""
    if name not in _ARCHS:
        raise ValueError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    return dict(_ARCHS[name])


def create_model(name: str, num_classes: int = 1000, ppt: Optional[Dict[str, Any]] = None,
                 **overrides: Any) -> VisionTransformer:
    """Build a registered DeiT, optionally with PPT.

    ``ppt``: None (plain DeiT) or ``{"r": int | list[int], "layers": list[int], "threshold": float,
    "prop_attn": bool}``. ``overrides`` change the architecture: img_size, patch_size, embed_dim, depth,
    num_heads, mlp_ratio, drop_path_rate. Weights are randomly initialised; see ``src.checkpoint``.
    """
    kwargs = model_defaults(name)
    unknown = set(overrides) - set(_OVERRIDABLE)
    if unknown:
        raise ValueError(f"create_model: unknown overrides {sorted(unknown)}; allowed: {', '.join(_OVERRIDABLE)}")
    kwargs.update(overrides)
    if ppt is not None:
        missing, extra = _PPT_KEYS - set(ppt), set(ppt) - _PPT_KEYS
        if missing or extra:
            raise ValueError(f"create_model: ppt needs exactly the keys {sorted(_PPT_KEYS)}; "
                             f"missing {sorted(missing)}, unexpected {sorted(extra)}")
        kwargs.update(ppt_layers=list(ppt["layers"]), ppt_r=ppt["r"], ppt_threshold=float(ppt["threshold"]),
                      prop_attn=bool(ppt["prop_attn"]))
    return VisionTransformer(num_classes=num_classes, **kwargs)
