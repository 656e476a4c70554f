"""Inference (src/inference.py, infer.py): eval preprocessing, checkpoint vs MindIR top-k, class names."""
import shutil

import numpy as np
import pytest
from PIL import Image

import export as export_script
import infer as infer_script
from src.checkpoint import save_weights
from src.factory import build_model
from src.config import load_config
from src.data import create_dataset
from src.inference import (IMAGENET_CLASSES_FILE, Preprocess, load_class_names, preprocess_images,
                           resolve_class_names, topk_probs)

CONFIG = """
model: {name: deit_tiny_patch16_224, num_classes: 10, img_size: 32, patch_size: 8, embed_dim: 48, depth: 3,
        num_heads: 3}
ppt: {r: 4, layers: [1], threshold: 1e9}
data: {path: /nonexistent/dataset, batch_size: 8, crop_pct: 0.875, interpolation: bicubic}
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Config, random-weight checkpoint, class names, three PNGs of different sizes, and the MindIR
    exported by export.py (batch 2: the third image goes into a padded chunk)."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel

    d = tmp_path_factory.mktemp("infer")
    (d / "cfg.yaml").write_text(CONFIG)
    save_weights(build_model(load_config(d / "cfg.yaml")), d / "w.ckpt")
    (d / "names.txt").write_text("".join(f"shape{i}\n" for i in range(10)))
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 50), (64, 37), (90, 90)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    try:
        export_script.main(["--config", str(d / "cfg.yaml"), "--ckpt", str(d / "w.ckpt"), "--format", "mindir",
                            "--batch-size", "2", "--out", str(d / "model")])
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    return d


def _images(d):
    return [str(d / f"img{i}.png") for i in range(3)]


def test_checkpoint_and_mindir_give_the_same_top5(workdir, capsys, graph_mode):
    d = workdir
    capsys.readouterr()
    infer_script.main(["--model", str(d / "w.ckpt"), "--config", str(d / "cfg.yaml"),
                       "--class_names", str(d / "names.txt"), *_images(d)])
    from_ckpt = capsys.readouterr().out
    # No config: preprocessing comes from the settings export.py stored in the MindIR.
    infer_script.main(["--model", str(d / "model.mindir"), "--class_names", str(d / "names.txt"), *_images(d)])
    from_mindir = capsys.readouterr().out
    assert from_ckpt == from_mindir
    lines = from_mindir.splitlines()
    assert len(lines) == 3 * 6 and lines[0] == _images(d)[0]
    assert lines[1].startswith("  1. ") and "shape" in lines[1] and "(class " in lines[1]


def test_mindir_against_a_different_config_is_refused(workdir, graph_mode):
    d = workdir
    with pytest.raises(ValueError, match=r"config's model \(64 px, 10 classes\) is not the one exported.*32 px"):
        infer_script.main(["--model", str(d / "model.mindir"), "--config", str(d / "cfg.yaml"),
                           "--set", "model.img_size=64", "--", *_images(d)])


def test_checkpoint_needs_a_config(workdir):
    with pytest.raises(ValueError, match="--config_path is required to build the model of a checkpoint"):
        infer_script.main(["--model", str(workdir / "w.ckpt"), *_images(workdir)])


def test_preprocessing_matches_the_eval_pipeline(tmp_path):
    folder = tmp_path / "val" / "a"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)).save(folder / "x.png")
    pre = Preprocess(32, 0.9, "bilinear", (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    dataset, _ = create_dataset(tmp_path, "val", 32, 1, crop_pct=0.9, interpolation="bilinear", mean=pre.mean,
                                std=pre.std, num_workers=1)
    expected = next(dataset.create_dict_iterator(output_numpy=True))["image"]
    np.testing.assert_array_equal(preprocess_images([folder / "x.png"], pre), expected)


def test_unreadable_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    pre = Preprocess(32, 0.875, "bicubic", (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match=r"bad.png: cannot read the image \(UnidentifiedImageError"):
        preprocess_images([bad], pre)


def test_imagenet_class_names():
    names = load_class_names(IMAGENET_CLASSES_FILE, 1000)
    assert names[0] == "tench, Tinca tinca" and names[1] == "goldfish, Carassius auratus"
    assert names[409] == "analog clock" and names[999] == "toilet tissue, toilet paper, bathroom tissue"
    assert resolve_class_names(1000) == names


def test_class_name_sources(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("a\nb\nc\n\n")
    assert resolve_class_names(3, names) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="names.txt: 3 class names, but the model has 4 classes"):
        resolve_class_names(4, names)
    names.write_text("a\n\nc\n")
    with pytest.raises(ValueError, match="line 2 is empty"):
        resolve_class_names(3, names)
    with pytest.raises(ValueError, match="has 10 classes.*pass --class_names FILE"):
        resolve_class_names(10, None, "/some/dataset")


def test_demo_dataset_names_are_its_sorted_folders(tmp_path, monkeypatch):
    root = tmp_path / "demo"
    for name in ("square", "circle", "ring"):
        (root / "val" / name).mkdir(parents=True)
        shutil.copyfile(IMAGENET_CLASSES_FILE, root / "val" / name / "x.png")  # only the suffix is scanned
    monkeypatch.setattr("src.inference.resolve_data_root", lambda path: root)
    assert resolve_class_names(3, None, "demo") == ["circle", "ring", "square"]
    with pytest.raises(ValueError, match="demo dataset has 3 classes but the model has 4"):
        resolve_class_names(4, None, "demo")


def test_topk_probs_are_sorted_softmax():
    logits = np.array([[0.0, 2.0, 1.0, 2.0]], dtype=np.float32)
    probs, idx = topk_probs(logits, 3)
    assert idx.tolist() == [[1, 3, 2]]  # ties keep index order
    e = np.exp(logits[0].astype(np.float64) - 2.0)
    np.testing.assert_allclose(probs[0], e[[1, 3, 2]] / e.sum(), rtol=1e-12)
    assert topk_probs(logits, 10)[1].shape == (1, 4)
