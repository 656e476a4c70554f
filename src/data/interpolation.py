"""The resize filters a config can name (``data.interpolation``) and the PIL filter of each: as timm, the
pipeline resizes with PIL's filters in evaluation and training, RandAugment's geometric ops included."""
from PIL import Image

__all__ = ["PIL_FILTERS", "INTERPOLATIONS"]

PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
INTERPOLATIONS = tuple(PIL_FILTERS)
