"""Inference (src/inference.py): eval preprocessing, predictors, class names, top-k."""

import shutil

import numpy as np
import pytest
from PIL import Image

from src.data import create_dataset
from src.inference import (
    IMAGENET_CLASSES_FILE,
    Preprocess,
    load_class_names,
    load_images,
    resolve_class_names,
    topk_probs,
)


def test_preprocessing_matches_the_eval_pipeline(tmp_path):
    folder = tmp_path / "val" / "a"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)).save(folder / "x.png")
    pre = Preprocess(32, 0.9, "bilinear", (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    dataset, _ = create_dataset(tmp_path, "val", 32, 1, crop_pct=0.9, interpolation="bilinear", mean=pre.mean,
                                std=pre.std, num_workers=1)
    expected = next(dataset.create_dict_iterator(output_numpy=True))["image"]
    np.testing.assert_array_equal(load_images([folder / "x.png"], pre), expected)


def test_unreadable_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    pre = Preprocess(32, 0.875, "bicubic", (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match=r"bad.png: cannot read the image \(UnidentifiedImageError"):
        load_images([bad], pre)


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

