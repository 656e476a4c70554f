"""DeiT / ViT models with token reduction (PPT by default): the registry, its families, the architecture spec,
the model."""
from .families import ModelFamily
from .families.mindcv import MindcvVisionTransformer
from .registry import (
    SIZES,
    create_model,
    list_families,
    list_models,
    model_class,
    model_family,
    model_spec,
    register_model,
)
from .spec import ARCH_OVERRIDES, ViTSpec
from .vit import PPTStats, VisionTransformer

__all__ = ["create_model", "list_models", "list_families", "model_class", "model_family", "model_spec",
           "register_model", "SIZES", "ModelFamily", "ARCH_OVERRIDES", "ViTSpec", "PPTStats", "VisionTransformer",
           "MindcvVisionTransformer"]
