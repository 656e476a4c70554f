"""timm's ViTs (Dosovitskiy et al.; the AugReg weights of Steiner et al.): DeiT's block and parameter names,
other sizes and patch sizes."""
from .base import ModelFamily

__all__ = ["TimmViT", "TIMM_VIT"]

# timm's default pretrained tag of a model, where it is not augreg_in21k_ft_in1k
_TAGS = {"vit_base_patch16_224": "augreg2_in21k_ft_in1k", "vit_large_patch32_224": "orig_in21k (no head)",
         "vit_large_patch32_384": "orig_in21k_ft_in1k"}


class TimmViT(ModelFamily):
    name = "timm ViT"
    weights = "timm `.{tag}`"
    reader = ".safetensors (`--model` if DeiT-shaped)"
    ppt = "untuned, scaled"

    def public_weights(self, model: str) -> str:
        return self.weights.format(tag=_TAGS.get(model, "augreg_in21k_ft_in1k"))


TIMM_VIT = TimmViT()
