"""DeiT (Touvron et al.): timm's ``VisionTransformer`` with DeiT's release weights, distilled variants too."""
from .base import ModelFamily

__all__ = ["DeiT", "DEIT"]


class DeiT(ModelFamily):
    name = "DeiT"
    weights = "DeiT release `.pth`; timm `.fb_in1k`"
    reader = ".pth, .safetensors"

    def ppt_origin(self, model: str) -> str:
        # Only DeiT-S's setting is published (the paper's); the others reuse it or scale it to 384 px.
        if model == "deit_small_patch16_224":
            return "the paper's"
        return "scaled to 384 px, untuned" if model.endswith("_384") else "DeiT-S's reused"


DEIT = DeiT()
