"""Inference (src/deploy/inference.py): eval preprocessing, class names and where they come from, top-k."""

import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from src.data import create_dataset
from src.deploy import Preprocess
from src.deploy.inference import (
    ClassNames,
    find_class_names,
    label_splits,
    load_images,
    resolve_class_names,
    topk_probs,
    weights_class_names,
)
from src.io.checkpoint import save_weights
from src.io.class_names import MissingClassNames, imagenet_class_names
from src.models import create_model

PRE = Preprocess(32, 0.875, "bicubic", (0.5,) * 3, (0.5,) * 3)


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
    with pytest.raises(ValueError, match=r"bad.png: cannot read the image \(UnidentifiedImageError"):
        load_images([bad], PRE)


def _dataset(root, **splits):
    """``root/<split>/<class>/x.png`` for each split's classes (created in the order given: the names are sorted
    on reading)."""
    for split, classes in splits.items():
        for name in classes:
            (root / split / name).mkdir(parents=True)
            (root / split / name / "x.png").write_bytes(b"")  # only the folders are read
    return root


def test_a_names_file_wins_over_stored_names_with_a_warning(tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("ant\nbee\ncat\n")
    stored = replace(PRE, class_names=("ant", "wasp", "cat"))
    with pytest.warns(UserWarning, match=r"names.txt: the class names differ from those stored in w.ckpt "
                                         r"\(class 1 is 'bee' vs 'wasp'\); using .*names.txt's") as caught:
        found = resolve_class_names(3, stored, names, model="w.ckpt")
    assert len(caught) == 1 and found == ClassNames(("ant", "bee", "cat"), str(names))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same names: nothing to warn about
        assert resolve_class_names(3, replace(PRE, class_names=found.names), names).names == found.names
    with pytest.raises(ValueError, match="names.txt: 3 class names, but the model has 4 classes"):
        resolve_class_names(4, stored, names)


def test_sources_in_order_stored_dataset_imagenet(tmp_path):
    data = _dataset(tmp_path / "data", train=["kiwi", "apple", "fig"], val=["x", "y", "z"])
    pre = replace(PRE, data_path=str(data), class_names=("one", "two", "three"))
    assert resolve_class_names(3, pre, model="w.ckpt") == ClassNames(("one", "two", "three"), "the metadata of w.ckpt")
    # A file written before names were stored: the training split's sorted class folders gave the labels.
    pre = replace(pre, class_names=None)
    assert resolve_class_names(3, pre) == ClassNames(("apple", "fig", "kiwi"), f"the class folders of {data / 'train'}")
    assert resolve_class_names(3, pre, splits=("val",)).names == ("x", "y", "z")
    assert resolve_class_names(3, replace(pre, data_path=str(_dataset(tmp_path / "v", val=["q", "p", "r"])))).names \
        == ("p", "q", "r")  # no training split here: the validation split's folders
    gone = replace(pre, data_path=str(tmp_path / "elsewhere"))
    assert resolve_class_names(1000, gone).names == tuple(imagenet_class_names())
    with pytest.raises(MissingClassNames) as err:
        resolve_class_names(10, gone, model="m.mindir")
    assert str(err.value) == (f"m.mindir: nothing names its 10 classes: it stores no class names, its dataset "
                              f"{tmp_path / 'elsewhere'} has no class folders on this machine, and it is not an "
                              f"ImageNet-1k model (1000 classes)")
    assert find_class_names(10, PRE) is None


def test_sources_that_do_not_fit_the_model_are_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^w.ckpt: stored class names: 2 class names, but the model has 3 classes"):
        resolve_class_names(3, replace(PRE, class_names=("a", "b")), model="w.ckpt")
    data = _dataset(tmp_path, train=["a", "b"])
    with pytest.raises(ValueError, match=r"train: class folders: 2 class names, but the model has 1000 classes"):
        resolve_class_names(1000, replace(PRE, data_path=str(data)))


def test_demo_dataset_names_are_its_sorted_folders(tmp_path, monkeypatch):
    root = _dataset(tmp_path / "demo", train=["square", "circle", "ring"])
    monkeypatch.setattr("src.deploy.inference.resolve_data_root", lambda path: root)
    assert resolve_class_names(3, replace(PRE, data_path="demo")).names == ("circle", "ring", "square")


def test_label_splits_follow_the_config():
    assert label_splits() == ("train", "val")
    assert label_splits({"train": {"train_split": "tr", "val_split": "va"}}) == ("tr", "va")


def test_stored_names_travel_in_the_data_info():
    pre = replace(PRE, data_path="/d", class_names=("ant", "bee"))
    info = json.loads(json.dumps(pre.to_dict()))  # as a MindIR's user_info or an ONNX file's metadata holds it
    assert info["class_names"] == ["ant", "bee"] and Preprocess.from_dict(info, "m.mindir") == pre
    del info["class_names"]  # exported before names were stored
    assert Preprocess.from_dict(info, "m.mindir").class_names is None
    info["class_names"] = ["ant", "ant"]
    with pytest.raises(ValueError, match=r"m.mindir: stored 'class_names': class name 'ant' is given twice"):
        Preprocess.from_dict(info, "m.mindir")


def test_topk_probs_are_sorted_softmax():
    logits = np.array([[0.0, 2.0, 1.0, 2.0]], dtype=np.float32)
    probs, idx = topk_probs(logits, 3)
    assert idx.tolist() == [[1, 3, 2]]  # ties keep index order
    e = np.exp(logits[0].astype(np.float64) - 2.0)
    np.testing.assert_allclose(probs[0], e[[1, 3, 2]] / e.sum(), rtol=1e-12)
    assert topk_probs(logits, 10)[1].shape == (1, 4)


def test_an_export_names_its_classes_by_the_weights_or_a_names_file_only(tmp_path):
    model = create_model("deit_tiny_patch16_224", num_classes=2, img_size=16, patch_size=8, embed_dim=24, depth=1,
                         num_heads=2)
    save_weights(model, tmp_path / "plain.ckpt")
    save_weights(model, tmp_path / "named.ckpt", meta={"class_names": ["ant", "bee"]})
    same, other = tmp_path / "same.txt", tmp_path / "other.txt"
    same.write_text("ant\nbee\n")
    other.write_text("bee\nant\n")
    assert weights_class_names(2, tmp_path / "plain.ckpt") is None  # no dataset is looked at
    assert weights_class_names(2, tmp_path / "named.ckpt") == ClassNames(("ant", "bee"),
                                                                         f"the metadata of {tmp_path / 'named.ckpt'}")
    assert weights_class_names(2, tmp_path / "named.ckpt", same) == ClassNames(("ant", "bee"), str(same))
    assert weights_class_names(2, tmp_path / "plain.ckpt", other).names == ("bee", "ant")
    with pytest.raises(ValueError, match=r"other.txt: the class names differ from those stored in .*named.ckpt "
                                         r"\(class 0 is 'bee' vs 'ant'\); expected the same names in the same order$"):
        weights_class_names(2, tmp_path / "named.ckpt", other)
    with pytest.raises(ValueError, match=r"named.ckpt: stored class names: 2 class names, but the model has 3"):
        weights_class_names(3, tmp_path / "named.ckpt")
