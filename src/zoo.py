"""The model zoo as a table: every registered model with its family, parameters, MACs without and with its
config's PPT setting, where its public weights come from and what reads them (README.md embeds the table
printed by ``python -m src.zoo``; a test checks they agree).

Families are recognised by name and building class, so models registered later (DeiT III) appear once their
family has a row in :data:`FAMILIES`; a registered model of no family is an error, not a blank row.
"""
import re
from dataclasses import dataclass
from pathlib import Path

from .config import configured_spec, load_config, ppt_setting
from .flops import count_macs_spec, count_params_spec
from .models import MindcvVisionTransformer, list_models, model_class

__all__ = ["Family", "FAMILIES", "family_of", "zoo_rows", "zoo_markdown"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


@dataclass(frozen=True)
class Family:
    label: str
    pattern: str  # a regular expression the model names of the family match (fullmatch)
    mindcv: bool  # built by MindcvVisionTransformer (mindcv's numerics and parameter names)
    weights: str  # where the public weights come from ({name} is the model's name)
    reader: str  # what reads them
    ppt: str  # where the PPT setting of its configs comes from (DeiT's: per model, see _ppt_origin)


_TIMM_TAGS = {"vit_base_patch16_224": "augreg2_in21k_ft_in1k", "vit_large_patch32_224": "orig_in21k (no head)",
              "vit_large_patch32_384": "orig_in21k_ft_in1k"}
_MINDCV_WEIGHTS = {"vit_b_32_224", "vit_l_16_224", "vit_l_32_224"}  # mindcv 0.3.0's default_cfgs with a url
_TORCH = ".pth, .safetensors"

FAMILIES = (
    Family("DeiT", r"deit_\w+", False, "DeiT release `.pth`; timm `.fb_in1k`", _TORCH, ""),
    Family("DeiT III", r"deit3_\w+", False, "DeiT III release `.pth`; timm `.fb_in1k`", _TORCH, "untuned"),
    Family("mindcv ViT", r"vit_[bl]_\d+_\d+", True, "mindcv 0.3.0 `.ckpt`", "mindcv's .ckpt as saved",
           "untuned, scaled"),
    Family("timm ViT", r"vit_[a-z]+_patch\d+_\d+", False, "timm `.{tag}`", ".safetensors (`--model` if DeiT-shaped)",
           "untuned, scaled"),
)


def family_of(name: str) -> Family:
    """The family of a registered model (ValueError for a model of no family)."""
    mindcv = issubclass(model_class(name), MindcvVisionTransformer)
    for family in FAMILIES:
        if re.fullmatch(family.pattern, name) and family.mindcv == mindcv:
            return family
    raise ValueError(f"model '{name}' belongs to no family of src.zoo.FAMILIES: add one")


def _weights(name: str, family: Family) -> str:
    if family.mindcv and name not in _MINDCV_WEIGHTS:
        return "none published"
    return family.weights.format(name=name, tag=_TIMM_TAGS.get(name, "augreg_in21k_ft_in1k"))


def _ppt_origin(name: str, family: Family) -> str:
    if family.label != "DeiT":
        return family.ppt
    if name == "deit_small_patch16_224":
        return "the paper's"
    return "scaled to 384 px, untuned" if name.endswith("_384") else "DeiT-S's reused"


def zoo_rows() -> list[dict[str, str]]:
    """One row per registered model: MACs with the PPT setting of ``config/<name>.yaml``."""
    rows = []
    for name in list_models():
        family = family_of(name)
        cfg = load_config(CONFIG_DIR / f"{name}.yaml")
        spec = configured_spec(cfg)  # the registered architecture: the shipped configs override nothing (tested)
        plain = count_macs_spec(spec)["total"]
        ppt = count_macs_spec(spec, ppt=ppt_setting(cfg))["total"]
        arch = f"{spec.embed_dim}/{spec.depth}/{spec.num_heads}, {spec.patch_size}, {spec.img_size}"
        rows.append({"model": f"`{name}`", "family": family.label, "width/depth/heads, patch, px": arch,
                     "params": f"{count_params_spec(spec) / 1e6:.1f} M",
                     "GMACs": f"{plain / 1e9:.2f}", "GMACs PPT": f"{ppt / 1e9:.2f}",
                     "PPT setting": _ppt_origin(name, family), "public weights": _weights(name, family),
                     "convert.py reads": family.reader})
    return rows


def zoo_markdown() -> str:
    """The table of :func:`zoo_rows` in Markdown."""
    rows = zoo_rows()
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row[key] for key in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(zoo_markdown(), end="")
