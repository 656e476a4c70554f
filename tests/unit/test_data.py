"""Data pipeline and demo dataset: scanning, eval/train pipelines, bad files, sharding, demo generator."""
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.config import SCHEMA
from src.data import (
    check_aug,
    check_num_classes,
    create_dataset,
    ensure_demo_dataset,
    resolve_data_root,
    scan_image_folder,
)
from src.data.dataset import shard_order
from src.data.demo import DEMO_ENV_VAR, MARKER_NAME, _marker
from src.data.transforms import BatchAugment, RandomResizedCrop, TrainTransform

# The defaults live in the config schema only: the tests take them from there.
PIPE = {key: SCHEMA["data"][key].default for key in ("crop_pct", "interpolation", "mean", "std")}
MEAN, STD = PIPE["mean"], PIPE["std"]
AUG = {key: row.default for key, row in SCHEMA["aug"].items()}
NO_AUG = {**AUG, "hflip": 0, "randaug_magnitude": 0, "erase_prob": 0, "mixup_alpha": 0, "cutmix_alpha": 0,
          "label_smoothing": 0}


def make(root, split, img_size, batch_size, **kwargs):
    """``create_dataset`` with the schema's preprocessing (and augmentation, for training) unless given."""
    if kwargs.get("training") and "aug" not in kwargs:
        kwargs["aug"] = AUG
    return create_dataset(root, split, img_size, batch_size, **{**PIPE, **kwargs})


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _grey(value: int, h: int = 20, w: int = 24) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def _truncated_png(path: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buf, "PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    return path


def _grey_set(root: Path, counts: dict[str, int], split: str = "val") -> list[int]:
    """``root/<split>/<class>/`` with constant grey images whose distinct grey levels identify them
    (any resize or crop of a constant image keeps its level)."""
    levels = []
    for cls, count in counts.items():
        for i in range(count):
            level = 10 + 10 * len(levels)
            _save(root / split / cls / f"{i}.png", _grey(level))
            levels.append(level)
    return levels


def _epoch(dataset, epochs: int = 1) -> list[dict]:
    it = dataset.create_dict_iterator(num_epochs=epochs, output_numpy=True)
    return [[batch for batch in it] for _ in range(epochs)]


def _levels(image_batch: np.ndarray) -> np.ndarray:
    """Grey level of each constant image of a normalised batch (inverts Normalize on channel 0)."""
    return np.round(image_batch[:, 0, 0, 0] * STD[0] * 255 + MEAN[0] * 255).astype(int)


# ---------------------------------------------------------------- scanning

def test_scan_sorts_classes_labels_and_ignores_non_images(tmp_path):
    split = tmp_path / "train"
    _save(split / "b" / "x.png", _grey(1))
    _save(split / "a" / "deep" / "y.JPG", _grey(2))   # nested, upper-case extension
    _save(split / "a" / "z.bmp", _grey(3))
    _save(split / "C" / "w.tiff", _grey(4))
    (split / "a" / "notes.txt").write_text("not an image")
    (split / "stray.png").write_bytes(b"")  # outside any class folder
    scan = scan_image_folder(split)
    assert scan.classes == ("C", "a", "b")  # plain string order, as torchvision
    assert [(p.name, label) for p, label in scan.samples] == [
        ("w.tiff", 0), ("z.bmp", 1), ("y.JPG", 1), ("x.png", 2)]  # walk sorted by folder, as torchvision
    assert sorted(p.name for p in scan.ignored) == ["notes.txt", "stray.png"]


def test_scan_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        scan_image_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "empty")) + ".*no class sub-folders"):
        scan_image_folder(tmp_path / "empty")
    (tmp_path / "noimg" / "cls").mkdir(parents=True)
    (tmp_path / "noimg" / "cls" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files found.*1 other files ignored"):
        scan_image_folder(tmp_path / "noimg")
    _save(tmp_path / "oneempty" / "a" / "0.png", _grey(0))
    (tmp_path / "oneempty" / "b").mkdir()
    with pytest.raises(ValueError, match=r"1 class folder\(s\) contain no image files: b"):
        scan_image_folder(tmp_path / "oneempty")


def test_class_count_mismatch(tmp_path):
    with pytest.raises(ValueError, match="found 3 class folders but the model has num_classes=1000"):
        check_num_classes(["a", "b", "c"], 1000, "/data/val")
    _grey_set(tmp_path, {"a": 1, "b": 1})
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "val")) + ".*found 2 .* num_classes=10"):
        make(tmp_path, "val", 16, 2, num_classes=10)


# ---------------------------------------------------------------- eval pipeline

def _reference(array: np.ndarray, img_size: int, crop_pct: float, resample: int) -> np.ndarray:
    """timm's eval transform with PIL and numpy: resize shorter side, centre crop (torchvision rounding)."""
    h, w = array.shape[:2]
    short = int(img_size / crop_pct)
    size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    resized = np.asarray(Image.fromarray(array).resize(size, resample), dtype=np.float32)
    top = int(round((resized.shape[0] - img_size) / 2.0))
    left = int(round((resized.shape[1] - img_size) / 2.0))
    crop = resized[top:top + img_size, left:left + img_size] / 255.0
    return ((crop - np.array(MEAN)) / np.array(STD)).transpose(2, 0, 1).astype(np.float32)


@pytest.mark.parametrize("interpolation,resample", [("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR)])
def test_eval_matches_pil_reference(tmp_path, interpolation, resample):
    rng = np.random.default_rng(1)
    # Smooth content plus noise, non-square and larger than the resize target (a downscale), with odd
    # crop margins so the rounding of the crop offset matters.
    yy, xx = np.mgrid[0:61, 0:47]
    base = np.stack([xx * 5, yy * 4, (xx + yy) * 2], -1) + rng.integers(0, 60, (61, 47, 3))
    array = np.clip(base, 0, 255).astype(np.uint8)
    _save(tmp_path / "val" / "only" / "img.png", array)
    dataset, info = make(tmp_path, "val", 32, 4, interpolation=interpolation, crop_pct=0.9)
    (batch,), = _epoch(dataset)
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and batch["valid"].tolist() == [1, 0, 0, 0]
    np.testing.assert_allclose(batch["image"][0], _reference(array, 32, 0.9, resample), atol=1e-4)
    assert info.num_images == 1 and info.num_batches == 1 and info.columns == ("image", "label", "valid")


def test_corrupt_file_is_reported_and_strict_raises(tmp_path):
    _grey_set(tmp_path, {"a": 2, "b": 2})
    bad = _truncated_png(tmp_path / "val" / "b" / "broken.png")
    (tmp_path / "val" / "a" / "readme.md").write_text("ignored")
    dataset, info = make(tmp_path, "val", 16, 2, num_workers=2)
    batches, = _epoch(dataset)
    valid = np.concatenate([b["valid"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    assert info.num_images == 5 and valid.tolist() == [1, 1, 1, 1, 0, 0]  # the bad file, then a pad row
    assert labels[4] == 1  # the bad file keeps its class label
    (path, reason), = info.bad_files()
    assert path == str(bad) and reason
    assert info.num_ignored == 1 and info.ignored_files[0].name == "readme.md"

    dataset, _ = make(tmp_path, "val", 16, 2, strict=True)
    with pytest.raises(RuntimeError, match=re.escape(str(bad))):
        _epoch(dataset)


@pytest.mark.parametrize("num_shards", [1, 2, 3])
def test_pad_last_and_shards_yield_every_image_once(tmp_path, num_shards):
    levels = _grey_set(tmp_path, {"a": 4, "b": 3})
    seen, batch_counts = [], set()
    for shard_id in range(num_shards):
        dataset, info = make(tmp_path, "val", 16, 2, num_shards=num_shards, shard_id=shard_id)
        batches, = _epoch(dataset)
        assert len(batches) == info.num_batches
        batch_counts.add(len(batches))
        for b in batches:
            assert b["image"].shape[0] == 2  # every batch full
            seen += _levels(b["image"])[b["valid"] == 1].tolist()
    assert sorted(seen) == levels  # each image exactly once, shards disjoint
    assert len(batch_counts) == 1  # every shard has the same number of batches


def test_keep_or_drop_partial_batch(tmp_path):
    levels = _grey_set(tmp_path, {"a": 3, "b": 2})
    dataset, info = make(tmp_path, "val", 16, 2, pad_last=False, shuffle=True, seed=4)
    batches, = _epoch(dataset)
    assert [len(b["label"]) for b in batches] == [2, 2, 1] and info.num_dropped == 0
    assert sorted(np.concatenate([_levels(b["image"]) for b in batches]).tolist()) == levels
    dataset, info = make(tmp_path, "val", 16, 2, pad_last=False, drop_remainder=True)
    assert [len(b["label"]) for b in _epoch(dataset)[0]] == [2, 2] and info.num_dropped == 1
    with pytest.raises(ValueError, match="pad_last=True and drop_remainder=True"):
        make(tmp_path, "val", 16, 2, drop_remainder=True)


def test_argument_errors(tmp_path):
    _grey_set(tmp_path, {"a": 1})
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "test"))):
        make(tmp_path, "test", 16, 2)
    with pytest.raises(ValueError, match="crop_pct must be a number in \\(0, 1\\], got 1.5"):
        make(tmp_path, "val", 16, 2, crop_pct=1.5)
    with pytest.raises(ValueError, match="interpolation must be one of bicubic, bilinear, got 'nearest'"):
        make(tmp_path, "val", 16, 2, interpolation="nearest")
    with pytest.raises(ValueError, match="shard_id must be an int in \\[0, 2\\), got 2"):
        make(tmp_path, "val", 16, 2, num_shards=2, shard_id=2)
    with pytest.raises(ValueError, match="aug is only used with training=True"):
        make(tmp_path, "val", 16, 2, aug={})


# ---------------------------------------------------------------- training pipeline

def _train_set(root: Path, per_class: int = 4, classes: int = 3) -> None:
    rng = np.random.default_rng(0)
    for c in range(classes):
        for i in range(per_class):
            _save(root / "train" / f"c{c}" / f"{i}.png", rng.integers(0, 256, (30, 26, 3), dtype=np.uint8))


def test_train_soft_targets_shapes(tmp_path):
    _train_set(tmp_path)
    dataset, info = make(tmp_path, "train", 16, 4, training=True, num_classes=3)
    batches, = _epoch(dataset)
    assert len(batches) == info.num_batches == 3 and info.soft_targets
    for b in batches:
        assert b["image"].shape == (4, 3, 16, 16) and b["image"].dtype == np.float32
        assert b["label"].shape == (4, 3) and b["label"].dtype == np.float32
        np.testing.assert_allclose(b["label"].sum(1), 1.0, rtol=1e-5)
        assert b["label"].min() >= 0.1 / 3 - 1e-6  # label smoothing's floor


def test_train_label_modes_and_seeded_shuffle(tmp_path):
    _train_set(tmp_path)
    dataset, info = make(tmp_path, "train", 16, 4, training=True, aug=NO_AUG, seed=7)
    assert not info.soft_targets
    first, second = _epoch(dataset, epochs=2)
    order = np.concatenate([b["label"] for b in first]).tolist()
    assert first[0]["label"].dtype == np.int32 and sorted(order) == [0] * 4 + [1] * 4 + [2] * 4
    # A training pipeline is one epoch: iterated again it repeats it; another epoch's seed reshuffles.
    assert np.concatenate([b["label"] for b in second]).tolist() == order
    other, _ = make(tmp_path, "train", 16, 4, training=True, aug=NO_AUG, seed=8)
    assert np.concatenate([b["label"] for b in _epoch(other)[0]]).tolist() != order

    smooth, info = make(tmp_path, "train", 16, 4, training=True,
                                  aug={**NO_AUG, "label_smoothing": 0.3})
    labels = _epoch(smooth)[0][0]["label"]
    assert info.soft_targets and labels.shape == (4, 3)
    np.testing.assert_allclose(np.sort(labels, axis=1), [[0.1, 0.1, 0.8]] * 4, rtol=1e-6)


def test_train_shards_are_disjoint(tmp_path):
    levels = _grey_set(tmp_path, {"a": 8, "b": 7}, split="train")  # 15 images: 2 shards of 7
    seen = []
    for shard_id in range(2):
        dataset, info = make(tmp_path, "train", 16, 7, training=True, aug=NO_AUG, num_shards=2,
                                       shard_id=shard_id, seed=3)
        (batch,), = _epoch(dataset)
        seen.append(set(_levels(batch["image"]).tolist()))
        assert info.num_shard_images == 7 and len(seen[-1]) == 7
    assert not seen[0] & seen[1] and seen[0] | seen[1] <= set(levels)


def test_shard_order_follows_deits_repeated_augmentation_sampler():
    perm = np.random.default_rng(4).permutation(10)
    assert shard_order(10, 4).tolist() == perm.tolist()
    for repeats, shards in ((1, 1), (3, 1), (3, 2), (2, 2), (3, 4)):
        # DeiT's RASampler: each index `repeats` times in a row, then every shards-th position per rank,
        # cut to n // shards (no rounding to multiples of 256 here).
        repeated = [i for i in perm.tolist() for _ in range(repeats)]
        for rank in range(shards):
            got = shard_order(10, 4, num_shards=shards, shard_id=rank, repeats=repeats).tolist()
            assert got == repeated[rank::shards][:10 // shards], (repeats, shards, rank)
    # 2 copies on 2 shards: both ranks read the same images at the same positions.
    assert shard_order(10, 4, 2, 0, repeats=2).tolist() == shard_order(10, 4, 2, 1, repeats=2).tolist()
    assert shard_order(6, 0, shuffle=False, repeats=2).tolist() == [0, 0, 1, 1, 2, 2]


def _train_batches(root: Path, aug: dict, batch_size: int, **kwargs) -> list[dict]:
    dataset, _ = make(root, "train", 16, batch_size, training=True, aug=aug, seed=5, **kwargs)
    return _epoch(dataset)[0]


def test_repeated_copies_and_shards_are_augmented_independently(tmp_path):
    _train_set(tmp_path)  # 12 images of 30 x 26 px
    fixed = {**NO_AUG, "scale": (1.0, 1.0), "ratio": (1.0, 1.0)}  # always the same centre crop
    random_aug = {**NO_AUG, "hflip": 0.5, "randaug_magnitude": 9}
    same = [_train_batches(tmp_path, fixed, 3, num_shards=2, shard_id=r, repeated_aug=2) for r in (0, 1)]
    for a, b in zip(*same):  # the two ranks read the same images ...
        np.testing.assert_array_equal(a["image"], b["image"])
    ranks = [_train_batches(tmp_path, random_aug, 3, num_shards=2, shard_id=r, repeated_aug=2) for r in (0, 1)]
    for a, b in zip(*ranks):  # ... and augment them differently
        np.testing.assert_array_equal(a["label"], b["label"])
        assert all(not np.array_equal(x, y) for x, y in zip(a["image"], b["image"]))
    # One device, 3 copies in a row: same label, each copy its own crop/flip/RandAugment.
    epoch = _train_batches(tmp_path, random_aug, 4, repeated_aug=3)
    labels, images = (np.concatenate([b[key] for b in epoch]) for key in ("label", "image"))
    assert len(labels) == 12 and (labels.reshape(4, 3) == labels[::3, None]).all()
    assert all(not np.array_equal(images[i], images[i + 1]) for i in (0, 1, 3, 4, 6, 7, 9, 10))


def test_training_batches_do_not_depend_on_the_number_of_workers(tmp_path):
    _train_set(tmp_path)
    aug = {**NO_AUG, "hflip": 0.5, "randaug_magnitude": 9, "erase_prob": 0.5, "mixup_alpha": 0.8,
           "label_smoothing": 0.1}
    one, two = (_train_batches(tmp_path, aug, 4, num_workers=w) for w in (1, 2))
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])


def test_repeated_aug_must_leave_a_global_batch_of_distinct_images(tmp_path):
    _train_set(tmp_path)
    with pytest.raises(ValueError, match=r"train: repeated augmentation 5 leaves 2 distinct images per epoch "
                                         r"\(12 / 5\), fewer than one global batch of 4$"):
        make(tmp_path, "train", 16, 4, training=True, repeated_aug=5)
    with pytest.raises(ValueError, match="repeated_aug must be an int >= 1, got 0"):
        make(tmp_path, "train", 16, 4, training=True, repeated_aug=0)
    with pytest.raises(ValueError, match="repeated_aug is only used with training=True"):
        make(tmp_path, "train", 16, 4, repeated_aug=3)


def test_random_resized_crop_draws_timms_boxes():
    rng = np.random.default_rng(0)
    # The area never fits (28 x 28 in 26 x 30): timm's fallback, a centre crop clamped to the ratio range.
    assert RandomResizedCrop(8, (1.0, 1.0), (1.0, 1.0), "bicubic").box(26, 30, rng) == (0, 2, 26, 26)
    assert RandomResizedCrop(8, (1.0, 1.0), (0.5, 0.5), "bicubic").box(26, 30, rng) == (5, 0, 15, 30)
    quarter = RandomResizedCrop(8, (0.25, 0.25), (1.0, 1.0), "bicubic")
    boxes = {quarter.box(26, 30, rng) for _ in range(200)}
    assert {(w, h) for _, _, w, h in boxes} == {(14, 14)}  # round(sqrt(0.25 * 780))
    lefts, tops = {b[0] for b in boxes}, {b[1] for b in boxes}
    assert min(lefts) == 0 and max(lefts) == 12 and min(tops) == 0 and max(tops) == 16  # inclusive ranges
    image = Image.fromarray(np.arange(30 * 26 * 3, dtype=np.uint8).reshape(30, 26, 3))
    crop = RandomResizedCrop(13, (1.0, 1.0), (1.0, 1.0), "bilinear")
    expected = image.crop((0, 2, 26, 28)).resize((13, 13), Image.BILINEAR)  # crop first, then resize
    np.testing.assert_array_equal(np.asarray(crop(image, rng)), np.asarray(expected))


def test_train_transform_flips_and_uses_the_mean_as_fill():
    image = Image.fromarray(np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3))
    aug = {**AUG, "scale": (1.0, 1.0), "ratio": (1.0, 1.0), "hflip": 1.0, "randaug_magnitude": 0}
    flipped = TrainTransform(16, "bicubic", aug, MEAN)(image, np.random.default_rng(0))
    np.testing.assert_array_equal(flipped, np.asarray(image)[:, ::-1])
    with_ra = TrainTransform(16, "bicubic", {**aug, "randaug_magnitude": 9}, (0.5, 0.25, 1.0))
    assert with_ra.randaug.fill == (128, 64, 255)  # timm: round(255 * mean)


def test_train_bad_image_raises_with_path(tmp_path):
    _train_set(tmp_path, per_class=2, classes=2)
    bad = _truncated_png(tmp_path / "train" / "c0" / "zz.png")
    dataset, _ = make(tmp_path, "train", 16, 5, training=True, aug=NO_AUG)
    with pytest.raises(RuntimeError, match=re.escape(str(bad)) + ".*unreadable training image"):
        _epoch(dataset)
    with pytest.raises(ValueError, match="pad_last=True is eval-only"):
        make(tmp_path, "train", 16, 2, training=True, pad_last=True)


def test_batch_augment_mixup_and_cutmix_targets():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    labels = np.array([0, 1, 2, 3], dtype=np.int32)
    mixup = BatchAugment(4, {**NO_AUG, "mixup_alpha": 0.8}, seed=0)
    out, targets = mixup(images, labels)
    lam = targets[0, 0]  # no smoothing: row 0 is lam * e0 + (1 - lam) * e3
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(targets[0, 3], 1 - lam, rtol=1e-6)
    np.testing.assert_allclose(out, lam * images + (1 - lam) * images[::-1], rtol=1e-5, atol=1e-6)

    cutmix = BatchAugment(4, {**NO_AUG, "cutmix_alpha": 1.0}, seed=1)
    out, targets = cutmix(images, labels)
    from_partner = np.isclose(out, images[::-1]) & ~np.isclose(images, images[::-1])
    area = from_partner[0, 0].mean()  # the pasted box, as a fraction of the image
    np.testing.assert_allclose(targets[0, 3], area, atol=1e-6)  # lam corrected to the real box area
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)


def test_check_aug_names_missing_keys_and_training_needs_it(tmp_path):
    assert check_aug(AUG) == AUG
    with pytest.raises(ValueError, match="aug: missing keys hflip, mixup_alpha"):
        check_aug({k: v for k, v in AUG.items() if k not in ("hflip", "mixup_alpha")})
    _train_set(tmp_path)
    with pytest.raises(ValueError, match="training needs aug"):
        create_dataset(tmp_path, "train", 16, 4, training=True, **PIPE)


# ---------------------------------------------------------------- demo dataset

SMALL = dict(num_classes=3, train_per_class=2, val_per_class=1, image_size=24, seed=5)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_is_deterministic_and_reused(tmp_path):
    a = ensure_demo_dataset(tmp_path / "a", **SMALL)
    b = ensure_demo_dataset(tmp_path / "b", **SMALL)
    tree = _tree(a)
    assert tree == _tree(b)
    assert len([k for k in tree if k.endswith(".png")]) == 3 * (2 + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary folders left
    assert {p.name for p in (a / "val").iterdir()} == {"circle", "ring", "square"}

    mtimes = {p: p.stat().st_mtime_ns for p in a.rglob("*")}
    assert ensure_demo_dataset(a, **SMALL) == a
    assert {p: p.stat().st_mtime_ns for p in a.rglob("*")} == mtimes  # reused, not rewritten
    other = ensure_demo_dataset(tmp_path / "c", **{**SMALL, "seed": 6})
    assert _tree(other) != tree


def test_demo_refuses_foreign_or_mismatched_folders(tmp_path):
    root = ensure_demo_dataset(tmp_path / "d", **SMALL)
    with pytest.raises(ValueError, match=re.escape(str(root / MARKER_NAME)) + ".*delete"):
        ensure_demo_dataset(root, **{**SMALL, "val_per_class": 2})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.txt").write_text("user data")
    with pytest.raises(ValueError, match=f"holds no {MARKER_NAME}"):
        ensure_demo_dataset(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "data.txt").exists()
    with pytest.raises(ValueError, match="num_classes must be an int in \\[2, 10\\], got 11"):
        ensure_demo_dataset(tmp_path / "e", **{**SMALL, "num_classes": 11})


def test_resolve_data_root(tmp_path, monkeypatch):
    # A marker for the default parameters stands in for a generated default set (keeps the test fast).
    root = tmp_path / "cache" / "demo"
    root.mkdir(parents=True)
    params = dict(num_classes=10, train_per_class=160, val_per_class=40, image_size=72, seed=0)
    (root / MARKER_NAME).write_text(json.dumps(_marker(params)))
    monkeypatch.setenv(DEMO_ENV_VAR, str(root))
    assert resolve_data_root("demo") == root
    assert resolve_data_root(str(tmp_path)) == tmp_path
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing"))):
        resolve_data_root(str(tmp_path / "missing"))


def test_demo_set_feeds_the_pipeline(tmp_path):
    root = ensure_demo_dataset(tmp_path / "demo", **{**SMALL, "image_size": 40})
    dataset, info = make(root, "val", 32, 4, num_classes=3)
    (batch,), = _epoch(dataset)
    assert batch["image"].shape == (4, 3, 32, 32) and batch["valid"].tolist() == [1, 1, 1, 0]
    assert info.classes == ("circle", "ring", "square")
