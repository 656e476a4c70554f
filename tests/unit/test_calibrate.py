"""Threshold calibration (src/analysis/calibrate.py): the tunable threshold against the fixed one, one compile for every
candidate, the label-free criterion, image folders with and without labels, and bad input."""
import json
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor
from PIL import Image

from src.analysis.calibrate import (
    POOL_ONLY,
    agreement_metrics,
    calibrate,
    default_thresholds,
    format_calibration,
    load_calibration_images,
    tunable_reducers,
)
from src.config import load_config
from src.models import PPTStats, create_model

from .test_sweep import DEMO_CONFIG, TINY, TINY_ARCH, tiny_setup

PPT = dict(r=4, layers=(1, 2), threshold=0.0)


def _tiny(threshold: float):
    ms.set_seed(0)
    model = create_model("deit_tiny_patch16_224", ppt=dict(PPT, threshold=threshold), **TINY_ARCH)
    model.set_train(False)
    return model


def test_one_compiled_graph_gives_the_fixed_thresholds_outputs(graph_mode):
    x = Tensor(np.random.default_rng(0).standard_normal((6, 3, 32, 32)).astype(np.float32))
    model = _tiny(0.0)
    reducers = tunable_reducers(model)
    assert len(reducers) == 2
    stats = PPTStats(model)
    svar = stats(x)[2].asnumpy()
    # thresholds between the measured variances, so that the decisions differ between candidates
    thresholds = [0.0, float(np.median(svar[:, 0])), float(np.median(svar[:, 1])), POOL_ONLY]
    tuned = []
    for t in thresholds:
        for reducer in reducers:
            reducer.set_threshold(t)
        tuned.append([o.asnumpy() for o in stats(x)[:2]])
    assert len(stats.compile_cache) == 1  # every threshold ran through the first graph
    assert len({pooled.tobytes() for _, pooled in tuned}) >= 3
    ms.set_context(mode=ms.PYNATIVE_MODE)  # the fixed-threshold references without compiling four graphs
    for t, (logits, pooled) in zip(thresholds, tuned):
        reference = PPTStats(_tiny(t))(x)
        np.testing.assert_array_equal(pooled, reference[1].asnumpy())
        np.testing.assert_allclose(logits, reference[0].asnumpy(), rtol=1e-5, atol=1e-6)


def test_the_swap_adds_no_weight_and_keeps_the_model_outputs():
    model = _tiny(1e-3)
    names = [p.name for p in model.trainable_params()]
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32))
    before = model(x).asnumpy()
    reducers = tunable_reducers(model)
    assert [p.name for p in model.trainable_params()] == names  # the thresholds are not weights
    # one name per block, as the model's own parameters (attaching a cell renames its parameters)
    thresholds = [p.name for p in model.get_parameters() if not p.requires_grad]
    assert thresholds == [f"blocks.{i}.reducer.runtime_threshold" for i in PPT["layers"]] == \
        [r.runtime_threshold.name for r in reducers]
    np.testing.assert_array_equal(model(x).asnumpy(), before)


def test_only_the_ppt_policy_is_tunable():
    model = create_model("deit_tiny_patch16_224", ppt=dict(PPT, policy="prune"), **TINY_ARCH)
    with pytest.raises(ValueError, match="'prune' policy; only the ppt policy has a threshold"):
        tunable_reducers(model)


def test_default_grid_has_both_ends_the_quantiles_and_the_config_threshold():
    svar = np.stack([np.linspace(1e-5, 1e-4, 101), np.linspace(1e-3, 2e-3, 101)], axis=1)
    grid = default_thresholds(svar, 6.6e-4)
    assert grid[0] == 0.0 and grid[-1] == POOL_ONLY and 6.6e-4 in grid
    assert grid == sorted(set(grid)) and len(grid) == 2 + 1 + 18
    assert 5.5e-5 in grid and 1.5e-3 in grid  # the medians of both blocks, 3 significant digits


def test_agreement_and_kl_direction():
    reference = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]))
    same = agreement_metrics(reference, reference, np.array([0, 2]))
    assert same == {"agreement": 100.0, "kl": 0.0, "top1": 50.0}
    reduced = np.log(np.array([[0.3, 0.6, 0.1], [0.1, 0.8, 0.1]]))
    got = agreement_metrics(reference, reduced, None)
    p, q = np.array([0.7, 0.2, 0.1]), np.array([0.3, 0.6, 0.1])
    assert got["agreement"] == 50.0 and got["top1"] is None
    # KL(unreduced || reduced), averaged over both images (the second contributes 0); not KL(q || p)
    assert got["kl"] == pytest.approx((p * np.log(p / q)).sum() / 2, rel=1e-12)
    assert got["kl"] != pytest.approx((q * np.log(q / p)).sum() / 2, rel=1e-3)


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(path)


def test_plain_folders_are_searched_recursively_without_labels(tmp_path):
    cfg = load_config(DEMO_CONFIG, TINY)
    for i, rel in enumerate(("a.png", "x/b.png", "x/y/c.jpg")):
        _png(tmp_path / "photos" / rel, i)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    (tmp_path / "photos" / "broken.png").write_bytes(b"not a png")
    got = load_calibration_images(cfg, str(tmp_path / "photos"))
    assert got.images.shape == (3, 3, 32, 32) and got.labels is None and got.num_files == 4
    assert got.labels_note.startswith("unlabelled") and [Path(p).name for p, _ in got.skipped] == ["broken.png"]
    assert len(load_calibration_images(cfg, str(tmp_path / "photos"), max_images=2).images) == 2


def test_a_split_of_the_models_classes_is_labelled(tmp_path):
    cfg, _, data = tiny_setup(tmp_path)
    got = load_calibration_images(cfg, data, "val")
    assert got.labels is not None and sorted(got.labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert got.labels_note == "labelled by its 3 class folders"


def test_a_folder_without_readable_images_is_one_error(tmp_path):
    cfg = load_config(DEMO_CONFIG, TINY)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="none of its 1 image files could be read"):
        load_calibration_images(cfg, str(tmp_path / "bad"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files in this folder"):
        load_calibration_images(cfg, str(tmp_path / "empty"))


def test_calibrate_end_to_end_in_graph_mode(tmp_path, graph_mode):
    cfg, ckpt, data = tiny_setup(tmp_path)
    report = calibrate(cfg, ckpt, data, target="0.7", batch_size=4)
    assert report["r"] == [6, 4]  # budget.py's analytic choice for 0.7 (tests/scripts/test_budget.py)
    rows = report["rows"]
    assert [r["threshold"] for r in rows] == sorted(r["threshold"] for r in rows)
    assert rows[0]["kind"] == "prune only" and rows[-1]["kind"] == "pool only"
    assert rows[0]["pooled_fraction"] == [0.0, 0.0] and rows[-1]["pooled_fraction"] == [1.0, 1.0]
    assert any(r["kind"] == "config" and r["threshold"] == 6.6e-4 for r in rows)
    assert report["candidate_compiles"] == 1 and report["num_images"] == 9
    best = max(r["agreement"] for r in rows)
    chosen = rows[report["chosen"]]
    assert chosen["agreement"] == best and chosen["kl"] == min(r["kl"] for r in rows if r["agreement"] == best)
    assert all(r["top1"] is not None for r in rows)
    assert f"  threshold: {chosen['threshold']:g}" in report["ppt_yaml"].splitlines()
    assert "  r: [6, 4]" in report["ppt_yaml"].splitlines()
    text = format_calibration(report)
    assert "top-1 %" in text and "(prune only)" in text and report["ppt_yaml"] in text
    json.dumps(report)  # JSON-ready


def test_bad_input_fails_before_any_model_runs(tmp_path, monkeypatch):
    cfg, ckpt, data = tiny_setup(tmp_path)
    monkeypatch.setattr("src.analysis.calibrate.build_model", None)  # a model built would fail differently
    with pytest.raises(ValueError, match="minimum reachable"):
        calibrate(cfg, ckpt, data, target="0.1")
    with pytest.raises(ValueError, match="thresholds must be finite numbers >= 0"):
        calibrate(cfg, ckpt, data, thresholds=[1e-4, -1e-4])
    with pytest.raises(ValueError, match="ppt.enabled: false"):
        calibrate(load_config(DEMO_CONFIG, TINY + ["ppt.enabled=false"]), ckpt, data)
    with pytest.raises(ValueError, match="only the ppt policy has a threshold"):
        calibrate(load_config(DEMO_CONFIG, TINY + ["ppt.policy=pool"]), ckpt, data)
