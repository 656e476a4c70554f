"""DeiT III (Touvron et al., 2022; timm's ``deit3_*``): DeiT with LayerScale and the position embedding on the
patches only (``ViTSpec.layer_scale_init``, ``no_embed_class``)."""
from .base import ModelFamily

__all__ = ["DeiT3", "DEIT3"]


class DeiT3(ModelFamily):
    name = "DeiT III"
    weights = "DeiT III release `.pth`; timm `.fb_in1k`"
    reader = ".pth, .safetensors"
    ppt = "untuned"
    # The release files (facebookresearch/deit models_v2) name the LayerScale vectors blocks.N.gamma_1/2; timm,
    # and so the model, blocks.N.ls1.gamma / ls2.gamma.
    release_renames = ((r"^(blocks\.\d+\.)gamma_([12])$", r"\1ls\2.gamma"),)


DEIT3 = DeiT3()
