"""DeiT / ViT models with token reduction (PPT by default): the registry, the architecture spec, the model."""
from .mindcv_vit import MindcvVisionTransformer
from .registry import create_model, list_models, model_class, model_family, model_spec, register_model
from .spec import ARCH_OVERRIDES, ViTSpec
from .vit import PPTStats, VisionTransformer

__all__ = ["create_model", "list_models", "model_class", "model_family", "model_spec", "register_model",
           "ARCH_OVERRIDES", "ViTSpec", "PPTStats", "VisionTransformer", "MindcvVisionTransformer"]
