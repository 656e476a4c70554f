"""The model zoo as a table: every registered model with its family, parameters, MACs without and with its
config's PPT setting, where its public weights come from and what reads them (README.md embeds the table
printed by ``python -m src.zoo``; a test checks they agree).

A model's family is the registry's (``src.models.model_family``); :data:`FAMILIES` says what the table shows
for each, and a registered model of a family it has no entry for is an error, not a blank row.
"""
from dataclasses import dataclass
from pathlib import Path

from .config import configured_spec, load_config, ppt_setting
from .flops import count_macs_spec, count_params_spec
from .models import list_models, model_family

__all__ = ["Family", "FAMILIES", "family_of", "zoo_rows", "zoo_markdown"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


@dataclass(frozen=True)
class Family:
    """What the table says of a family of the registry (``src.models.model_family``)."""
    weights: str  # where the public weights come from ({tag}: the model's timm tag)
    reader: str  # what reads them
    ppt: str  # where the PPT setting of its configs comes from (DeiT's: per model, see _ppt_origin)


_TIMM_TAGS = {"vit_base_patch16_224": "augreg2_in21k_ft_in1k", "vit_large_patch32_224": "orig_in21k (no head)",
              "vit_large_patch32_384": "orig_in21k_ft_in1k"}
_MINDCV_WEIGHTS = {"vit_b_32_224", "vit_l_16_224", "vit_l_32_224"}  # mindcv 0.3.0's default_cfgs with a url
_TORCH = ".pth, .safetensors"

FAMILIES = {
    "DeiT": Family("DeiT release `.pth`; timm `.fb_in1k`", _TORCH, ""),
    "DeiT III": Family("DeiT III release `.pth`; timm `.fb_in1k`", _TORCH, "untuned"),
    "mindcv ViT": Family("mindcv 0.3.0 `.ckpt`", "mindcv's .ckpt as saved", "untuned, scaled"),
    "timm ViT": Family("timm `.{tag}`", ".safetensors (`--model` if DeiT-shaped)", "untuned, scaled"),
}


def family_of(name: str) -> Family:
    """The table's entry for the family of a registered model (ValueError for a family it has no entry for)."""
    family = model_family(name)
    if family not in FAMILIES:
        raise ValueError(f"model '{name}' is of family '{family}', which src.zoo.FAMILIES has no entry for: add one")
    return FAMILIES[family]


def _weights(name: str, family: Family) -> str:
    if family is FAMILIES["mindcv ViT"] and name not in _MINDCV_WEIGHTS:
        return "none published"
    return family.weights.format(tag=_TIMM_TAGS.get(name, "augreg_in21k_ft_in1k"))


def _ppt_origin(name: str, family: Family) -> str:
    if family is not FAMILIES["DeiT"]:
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
        rows.append({"model": f"`{name}`", "family": model_family(name), "width/depth/heads, patch, px": arch,
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
