"""The model zoo as a table: every registered model with its family, parameters, MACs without and with its
config's PPT setting, where its public weights come from and what reads them (README.md embeds the table
printed by ``python -m src.analysis.zoo``; a test checks they agree).

Each row's family text (its name, where its public weights come from, what reads them, where its PPT setting
comes from) is the family's (``src.models.model_family(name)``, a ``src.models.families.ModelFamily``), and its
MACs and parameters are counted with the family's model class.
"""
from pathlib import Path

from ..config import configured_spec, load_config, ppt_setting
from ..flops import count_macs_spec, count_params_spec
from ..models import list_models, model_family

__all__ = ["zoo_rows", "zoo_markdown"]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def zoo_rows() -> list[dict[str, str]]:
    """One row per registered model: MACs with the PPT setting of ``config/<name>.yaml``."""
    rows = []
    for name in list_models():
        family = model_family(name)
        cfg = load_config(CONFIG_DIR / f"{name}.yaml")
        spec = configured_spec(cfg)  # the registered architecture: the shipped configs override nothing (tested)
        plain = count_macs_spec(spec, model_cls=family.model_cls)["total"]
        ppt = count_macs_spec(spec, ppt=ppt_setting(cfg), model_cls=family.model_cls)["total"]
        arch = f"{spec.embed_dim}/{spec.depth}/{spec.num_heads}, {spec.patch_size}, {spec.img_size}"
        rows.append({"model": f"`{name}`", "family": family.name, "width/depth/heads, patch, px": arch,
                     "params": f"{count_params_spec(spec, model_cls=family.model_cls) / 1e6:.1f} M",
                     "GMACs": f"{plain / 1e9:.2f}", "GMACs PPT": f"{ppt / 1e9:.2f}",
                     "PPT setting": family.ppt_origin(name), "public weights": family.public_weights(name),
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
