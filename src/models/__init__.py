"""DeiT models with PPT token reduction."""
from .registry import create_model, list_models, model_defaults
from .vit import PPTStats, VisionTransformer

__all__ = ["create_model", "list_models", "model_defaults", "PPTStats", "VisionTransformer"]
