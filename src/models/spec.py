"""The architecture of a registered ViT, stated once: the registry, the config, the MACs counter, the budget
search, inference and checkpoint conversion all read it from here."""
import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["ViTSpec", "ARCH_OVERRIDES"]

# The fields a config (``model.*``) or a converted checkpoint may change from a registered model's values.
ARCH_OVERRIDES: tuple[str, ...] = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_ratio")


@dataclass(frozen=True)
class ViTSpec:
    """A ViT/DeiT architecture. ``distilled`` adds DeiT's distillation token and second head.

    DeiT III (timm's ``deit3_*``) sets the last two: ``layer_scale_init`` (timm's ``init_values``) puts a
    learned per-channel scale, initialised to it, on both residual branches of every block (None: no
    LayerScale); ``no_embed_class`` adds the position embedding to the patch tokens only and prepends the
    prefix token(s) afterwards, so ``pos_embed`` holds one entry per patch.
    """

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    distilled: bool = False
    layer_scale_init: float | None = None
    no_embed_class: bool = False

    def __post_init__(self) -> None:
        for name in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) or \
                int(self.embed_dim * self.mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio: expected a number with embed_dim * mlp_ratio >= 1, got {self.mlp_ratio!r}")
        for name in ("distilled", "no_embed_class"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        init = self.layer_scale_init
        if init is not None and (isinstance(init, bool) or not isinstance(init, (int, float)) or not init > 0):
            raise ValueError(f"layer_scale_init: expected None or a number > 0, got {init!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: the class token, and the distillation token of distilled DeiTs."""
        return 2 if self.distilled else 1

    @property
    def num_tokens(self) -> int:
        return self.num_patches + self.num_prefix_tokens

    @property
    def pos_embed_len(self) -> int:
        """Entries of ``pos_embed``: every token, or only the patches with ``no_embed_class``."""
        return self.num_patches if self.no_embed_class else self.num_tokens

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def hidden_dim(self) -> int:
        """MLP width (timm: ``int(embed_dim * mlp_ratio)``)."""
        return int(self.embed_dim * self.mlp_ratio)

    def replace(self, **changes: Any) -> "ViTSpec":
        """This spec with ``changes`` (only :data:`ARCH_OVERRIDES` may change)."""
        unknown = sorted(set(changes) - set(ARCH_OVERRIDES))
        if unknown:
            raise ValueError(f"architecture overrides {unknown} are not supported; allowed: "
                             f"{', '.join(ARCH_OVERRIDES)}")
        return dataclasses.replace(self, **changes)
