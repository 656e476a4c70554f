"""src.evaluation (loop, report, entry points) on a tiny generated ImageFolder with a tiny random-weight PPT model."""

import re

import mindspore as ms
import numpy as np
import pytest

from src.evaluation import (
    evaluate,
    format_comparison,
    format_per_class,
    per_class_results,
    unwrap_pipeline_error,
)
from src.models import create_model

ARCH = dict(name="deit_tiny_patch16_224", num_classes=3, img_size=32, patch_size=8, embed_dim=48, depth=3,
            num_heads=3)


PPT = {"r": 2, "layers": [1], "threshold": 1e-3, "prop_attn": True}


class _FakeDataset:
    """The part of a mindspore.dataset eval pipeline evaluate() uses."""

    def __init__(self, batches):
        self.batches = batches

    def get_dataset_size(self):
        return len(self.batches)

    def create_tuple_iterator(self, num_epochs, output_numpy):
        assert num_epochs == 1 and output_numpy
        return iter(self.batches)


@pytest.mark.parametrize("threshold, pooled", [(0.0, 0.0), (1e9, 1.0)])
def test_evaluate_counts_only_valid_rows(threshold, pooled):
    ms.set_seed(0)
    model = create_model(**ARCH, ppt=dict(PPT, threshold=threshold))
    model.set_train(True)
    rng = np.random.default_rng(0)
    images = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    labels = np.array([0, 1, 2, 1, 0, 2, 2, 0], np.int32)
    # Rows 2, 5 and 7 are padding / unreadable: their labels are wrong on purpose and must not count.
    valid = np.array([1, 1, 0, 1, 1, 0, 1, 0], np.int32)
    bad_labels = np.where(valid == 1, labels, (labels + 1) % 3).astype(np.int32)
    dataset = _FakeDataset([(images[:4], bad_labels[:4], valid[:4]), (images[4:], bad_labels[4:], valid[4:])])
    result = evaluate(model, dataset, progress=False, per_class=True)

    assert model.training  # the previous mode is restored
    model.set_train(False)
    keep = valid == 1
    logits = model(ms.Tensor(images[keep])).asnumpy().astype(np.float64)
    log_prob = logits - logits.max(axis=1, keepdims=True)
    log_prob -= np.log(np.exp(log_prob).sum(axis=1, keepdims=True))
    assert result["num_images"] == 5
    assert result["top1"] == pytest.approx(100.0 * np.mean(logits.argmax(axis=1) == labels[keep]))
    assert result["loss"] == pytest.approx(-log_prob[np.arange(5), labels[keep]].mean(), rel=1e-5)
    confusion = np.zeros((3, 3), np.int64)
    np.add.at(confusion, (labels[keep], logits.argmax(axis=1)), 1)
    assert result["confusion"] == confusion.tolist()  # the padding rows are not counted here either
    assert result["pooled_fraction"] == [pooled] and result["pruned_fraction"] == [1.0 - pooled]
    assert result["svar_mean"][0] > 0
    for key in ("seconds", "images_per_sec", "forward_seconds", "forward_images_per_sec", "first_batch_seconds"):
        assert result[key] > 0, key


def test_evaluate_rejects_all_invalid_and_bad_labels():
    model = create_model(**ARCH)
    images = np.zeros((2, 3, 32, 32), np.float32)
    with pytest.raises(ValueError, match="no valid image in 2 rows"):
        evaluate(model, _FakeDataset([(images, np.zeros(2, np.int32), np.zeros(2, np.int32))]), progress=False)
    with pytest.raises(ValueError, match="label 7 is outside the model's 3 classes"):
        evaluate(model, _FakeDataset([(images, np.array([0, 7], np.int32), np.ones(2, np.int32))]),
                 progress=False)


def test_per_class_top1_and_the_classes_ppt_hurts_first():
    base = per_class_results([[3, 1, 0], [0, 2, 2], [0, 0, 0]], ["ant", "bee", "cat"])
    assert base == [{"class": 0, "name": "ant", "images": 4, "top1": 75.0},
                    {"class": 1, "name": "bee", "images": 4, "top1": 50.0},
                    {"class": 2, "name": "cat", "images": 0, "top1": None}]
    ppt = per_class_results([[3, 1, 0], [2, 0, 2], [0, 0, 0]], ["ant", "bee", "cat"])
    table = format_per_class({"baseline": {"per_class": base}, "PPT": {"per_class": ppt}}).splitlines()
    assert table[0].split() == ["class", "name", "images", "baseline", "top-1", "%", "PPT", "top-1", "%", "PPT", "vs",
                                "baseline", "(pts)"]
    assert [line.split() for line in table[2:]] == [["1", "bee", "4", "50.00", "0.00", "-50.00"],
                                                    ["0", "ant", "4", "75.00", "75.00", "+0.00"],
                                                    ["2", "cat", "0", "-", "-", "-"]]
    alone = format_per_class({"PPT": {"per_class": ppt}}).splitlines()  # one result: in class order
    assert [line.split()[0] for line in alone[2:]] == ["0", "1", "2"] and "vs" not in alone[0]


def test_format_comparison_ratios():
    base = dict(top1=80.0, top5=95.0, loss=0.9, macs=4_600_000_000, forward_images_per_sec=100.0,
                images_per_sec=50.0)
    ppt = dict(top1=79.5, top5=94.8, loss=0.95, macs=2_300_000_000, forward_images_per_sec=180.0,
               images_per_sec=60.0)
    table = format_comparison({"baseline": base, "PPT": ppt}).splitlines()
    assert table[0].split() == ["baseline", "PPT"]
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in table[2:])}
    assert rows["top-1 (%)"] == ["80.00", "79.50"]
    assert rows["GMACs / image"] == ["4.6", "2.3"]
    assert rows["top-1 vs baseline (pts)"] == ["+0.00", "-0.50"]
    assert rows["speed-up vs baseline"] == ["1.00x", "1.80x"]
    assert rows["MACs reduction vs baseline"] == ["1.00x", "2.00x"]


def test_unwrap_pipeline_error():
    wrapped = RuntimeError("Exception thrown from user defined Python function in dataset.\n"
                           "Traceback (most recent call last):\n"
                           "ValueError: Traceback (most recent call last):\n"
                           '  File "src/data/dataset.py", line 81, in __getitem__\n'
                           "ValueError: /d/val/b/x.png: unreadable image (OSError: truncated)\n\n"
                           "[ERROR] Execute user Python code failed\n")
    assert unwrap_pipeline_error(wrapped) == "/d/val/b/x.png: unreadable image (OSError: truncated)"
    assert unwrap_pipeline_error(RuntimeError("kernel launch failed")) is None

