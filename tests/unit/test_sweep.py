"""The accuracy / MACs / throughput sweep (src/analysis/sweep.py) on a tiny model and a tiny generated folder."""

import csv
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from src.analysis.sweep import CSV_COLUMNS, run_sweep
from src.config import load_config, model_kwargs
from src.io.checkpoint import save_weights
from src.models import create_model

from ..conftest import ROOT, macs_of

DEMO_CONFIG = ROOT / "config" / "demo.yaml"


TINY = ["model.img_size=32", "model.patch_size=8", "model.embed_dim=48", "model.depth=4", "model.num_heads=3",
        "model.num_classes=3", "ppt.r=4", "ppt.layers=[1,2]", "ppt.threshold=6.6e-4", "ppt.prop_attn=true",
        "data.batch_size=4", "data.num_workers=1"]


TINY_ARCH = dict(img_size=32, patch_size=8, embed_dim=48, depth=4, num_heads=3, num_classes=3)


def make_folder(root: Path, per_class: int = 3) -> Path:
    """``root/val/<class>/*.png``: 3 classes of small random images (each class its own base colour)."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("a", "b", "c")):
        folder = root / "val" / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            base = np.array([200 if k == c else 40 for k in range(3)], np.float32)
            pixels = np.clip(base + rng.normal(0, 30, (40, 44, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def tiny_setup(tmp_path: Path):
    """(config, checkpoint path, dataset root) for the tiny model with saved random weights."""
    data = make_folder(tmp_path / "data")
    cfg = load_config(DEMO_CONFIG, TINY + [f"data.path={data}"])
    ms.set_seed(0)
    ckpt = tmp_path / "tiny.ckpt"
    save_weights(create_model(**model_kwargs(cfg)), ckpt)
    return cfg, str(ckpt), str(data)


def test_sweep_writes_csv_json_png_with_baseline_and_every_setting(tmp_path):
    """PyNative (no compiles): r=0 is the baseline computed through the PPT model, so it must match it."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    cfg, ckpt, data = tiny_setup(tmp_path)
    prefix = tmp_path / "out" / "sweep"
    rows = run_sweep(cfg, ckpt, [0, 4], layer_sets=[[1, 2]], thresholds=[1e9], data=data, timing_runs=1,
                     out_prefix=str(prefix), progress=False)
    assert [r["name"] for r in rows] == ["baseline", "r=0 layers=[1, 2] thr=1e+09", "r=4 layers=[1, 2] thr=1e+09"]
    base = rows[0]
    assert base["macs"] == macs_of(**TINY_ARCH)["total"] and base["macs_ratio"] == 1.0
    assert base["speedup"] == 1.0 and base["num_images"] == 9 and base["r"] == [] and base["tokens"] == 17
    zero, pp = rows[1], rows[2]
    assert zero["top1"] == base["top1"] and zero["loss"] == pytest.approx(base["loss"], abs=1e-6)
    assert zero["macs"] == base["macs"] and zero["tokens"] == 17 and zero["layers"] == []  # r = 0: no PP block
    assert pp["r"] == [4, 4] and pp["tokens"] == 9 and pp["pooled_fraction"] == [1.0, 1.0]  # pool-only threshold
    assert pp["macs"] == macs_of(**TINY_ARCH, layers=[1, 2], r=4)["total"]
    assert pp["macs_ratio"] == pytest.approx(pp["macs"] / base["macs"]) and pp["threshold"] == 1e9
    assert all(r["images_per_sec"] > 0 and r["num_images"] == 9 for r in rows)

    with open(f"{prefix}.csv", newline="") as f:
        table = list(csv.reader(f))
    assert tuple(table[0]) == CSV_COLUMNS and len(table) == 1 + len(rows)
    assert table[3][CSV_COLUMNS.index("r")] == "4 4" and table[1][CSV_COLUMNS.index("r")] == ""
    saved = json.loads(Path(f"{prefix}.json").read_text())
    assert saved["rows"] == rows and saved["checkpoint"] == ckpt and saved["mode"] == "pynative"
    with Image.open(f"{prefix}.png") as png:
        assert png.format == "PNG" and png.size == (1100, 450)
    assert sorted(p.name for p in prefix.parent.iterdir()) == ["sweep.csv", "sweep.json", "sweep.png"]  # no temp files


def test_sweep_rejects_bad_settings(tmp_path):
    cfg = load_config(DEMO_CONFIG, TINY)
    with pytest.raises(ValueError, match="needs trained weights"):
        run_sweep(cfg, None, [4], data="demo", out_prefix=str(tmp_path / "s"))
    with pytest.raises(ValueError, match=r"r values must be ints >= 0, got \[-1\]"):
        run_sweep(cfg, None, [-1], out_prefix=str(tmp_path / "s"))
    off = load_config(DEMO_CONFIG, TINY + ["ppt.enabled=false", "ppt.layers=null", "ppt.threshold=null"])
    with pytest.raises(ValueError, match="no ppt.layers.*--sweep-layers"):
        run_sweep(off, None, [4], out_prefix=str(tmp_path / "s"))
    with pytest.raises(ValueError, match=r"PP layers \[7\] must be distinct block indices in \[0, 4\)"):
        run_sweep(cfg, None, [4], layer_sets=[[7]], out_prefix=str(tmp_path / "s"))
    assert not list(tmp_path.iterdir())

