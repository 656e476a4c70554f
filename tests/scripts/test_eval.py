"""eval.py end to end on a tiny generated ImageFolder: metrics against an independent computation, --strict,
one-line input errors."""

import json
import runpy
import subprocess
import sys
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from src.io.checkpoint import load_weights, save_weights
from src.models import create_model

from ..conftest import ROOT
from ..unit.test_evaluation import ARCH, PPT  # noqa: F401 (fixtures, helpers)

CLASSES = ("ant", "bee", "cat")


MEAN = np.array([0.485, 0.456, 0.406])


STD = np.array([0.229, 0.224, 0.225])


CONFIG = """\
seed: 0
model: {{name: {name}, num_classes: {num_classes}, img_size: {img_size}, patch_size: {patch_size},
        embed_dim: {embed_dim}, depth: {depth}, num_heads: {num_heads}}}
ppt: {{r: 2, layers: [1], threshold: 1.0e-3}}
data: {{path: {data}, batch_size: 4, num_workers: 1}}
"""


def _write_folder(split_dir: Path, classes, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for c in classes:
        (split_dir / c).mkdir(parents=True)
        for i in range(per_class):
            # 40x50 and 40x40: the 36 px resize of the shorter side gives whole-pixel sizes (45, 36).
            w = 50 if i % 2 else 40
            pixels = rng.integers(0, 256, (40, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(split_dir / c / f"img{i}.png")


def _spread_head(data: Path):
    """A random PPT model whose head is rescaled and re-centred on the test images, so that its predictions
    differ between images (a random head predicts one class for all) and accuracy and loss are informative."""
    ms.set_seed(0)
    model = create_model(**ARCH, ppt=PPT)
    model.set_train(False)
    logits = model(ms.Tensor(_reference_inputs(data)[0])).asnumpy()
    scale = 2.0 / (logits - logits.mean(axis=0)).std()
    head = model.head
    head.weight.set_data(ms.Tensor(head.weight.asnumpy() * scale))
    head.bias.set_data(ms.Tensor(scale * (head.bias.asnumpy() - logits.mean(axis=0))))
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 3-class val folder (9 images + a corrupt PNG + a text file), a config and random PPT weights."""
    tmp = tmp_path_factory.mktemp("eval")
    data = tmp / "data"
    _write_folder(data / "val", CLASSES, 3, seed=1)
    (data / "val" / "bee" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (data / "val" / "cat" / "notes.txt").write_text("not an image")
    two = tmp / "two_classes"
    _write_folder(two / "val", CLASSES[:2], 1, seed=2)
    config = tmp / "tiny.yaml"
    config.write_text(CONFIG.format(data=data, **ARCH))
    ckpt = tmp / "tiny.ckpt"
    save_weights(_spread_head(data), ckpt)
    return {"tmp": tmp, "data": data, "two": two, "config": config, "ckpt": ckpt}


def _reference_inputs(data: Path):
    """The valid images, preprocessed independently of src.data: PIL bicubic resize of the shorter side to
    int(32 / 0.875) = 36, torchvision-style centre crop, ImageNet normalisation."""
    images, labels = [], []
    for label, c in enumerate(CLASSES):
        for path in sorted((data / "val" / c).glob("img*.png")):
            img = Image.open(path).convert("RGB")
            w, h = img.size
            short = 36
            size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
            arr = np.asarray(img.resize(size, Image.BICUBIC), dtype=np.float64) / 255.0
            top, left = int(round((arr.shape[0] - 32) / 2.0)), int(round((arr.shape[1] - 32) / 2.0))
            arr = (arr[top:top + 32, left:left + 32] - MEAN) / STD
            images.append(arr.transpose(2, 0, 1))
            labels.append(label)
    return np.stack(images).astype(np.float32), np.array(labels)


def _reference_metrics(ckpt: Path, ppt, images: np.ndarray, labels: np.ndarray):
    """top-1, mean loss and the confusion matrix [true, predicted] of the model on the images."""
    model = create_model(**ARCH, ppt=ppt)
    load_weights(model, ckpt)
    model.set_train(False)
    logits = model(ms.Tensor(images)).asnumpy().astype(np.float64)
    top1 = 100.0 * np.mean(logits.argmax(axis=1) == labels)
    log_prob = logits - logits.max(axis=1, keepdims=True)
    log_prob -= np.log(np.exp(log_prob).sum(axis=1, keepdims=True))
    confusion = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    np.add.at(confusion, (labels, logits.argmax(axis=1)), 1)
    return top1, -log_prob[np.arange(len(labels)), labels].mean(), confusion


def _run_script(args, mode="pynative"):
    """eval.py in this process (fast: no interpreter start-up); returns (exit code, stderr)."""
    argv = sys.argv
    sys.argv = ["eval.py", "--mode", mode] + [str(a) for a in args]
    try:
        runpy.run_path(str(ROOT / "eval.py"), run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = argv
        ms.set_context(mode=ms.PYNATIVE_MODE)
    return code


def test_eval_end_to_end_matches_independent_metrics(setup):
    out = setup["tmp"] / "results.json"
    proc = subprocess.run([sys.executable, "eval.py", "--config", setup["config"], "--ckpt", setup["ckpt"],
                           "--out", out, "--compare-baseline", "--per-class", "--plot"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["baseline", "PPT"]
    assert report["num_files"] == 10 and report["num_images"] == 9
    assert [Path(b["path"]).name for b in report["unreadable_files"]] == ["broken.png"]
    assert [Path(p).name for p in report["ignored_files"]] == ["notes.txt"]

    images, labels = _reference_inputs(setup["data"])
    for name, ppt in (("baseline", None), ("PPT", PPT)):
        result = report["results"][name]
        top1, loss, confusion = _reference_metrics(setup["ckpt"], ppt, images, labels)
        assert result["num_images"] == 9
        assert result["top1"] == pytest.approx(top1, abs=1e-9), name
        assert result["loss"] == pytest.approx(loss, abs=1e-4), name
        assert result["top5"] == 100.0  # 3 classes: top-5 is top-3
        assert result["confusion"] == confusion.tolist(), name
        assert [(c["class"], c["name"], c["images"]) for c in result["per_class"]] == [
            (0, "ant", 3), (1, "bee", 3), (2, "cat", 3)]  # bee's broken.png is not counted
        for c in result["per_class"]:
            assert c["top1"] == pytest.approx(100.0 * confusion[c["class"], c["class"]] / 3), name
    ppt = report["results"]["PPT"]
    assert ppt["ppt_layers"] == [1] and len(ppt["pooled_fraction"]) == 1
    assert ppt["pooled_fraction"][0] + ppt["pruned_fraction"][0] == pytest.approx(1.0)
    assert ppt["macs"] < report["results"]["baseline"]["macs"]
    # Both columns of the side-by-side table, and the unreadable file, are in the printed report.
    lines = proc.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.split()[:2] == ["baseline", "PPT"])
    assert lines[at].split() == ["baseline", "PPT"] and set(lines[at + 1].replace(" ", "")) == {"-"}
    top1 = [f"{report['results'][name]['top1']:.2f}" for name in ("baseline", "PPT")]
    assert lines[at + 2].split() == ["top-1", "(%)", *top1]  # the table shows the report's numbers
    assert "speed-up vs baseline" in proc.stdout and "broken.png" in proc.stdout
    # The classes are named by the split's class folders (the checkpoint stores no names): one row per class.
    assert report["class_names"] == list(CLASSES)
    assert report["class_names_source"] == f"the class folders of {setup['data'] / 'val'}"
    assert f"top-1 per class (names: the class folders of {setup['data'] / 'val'}):" in proc.stdout
    assert sum(line.split()[1:2] in (["ant"], ["bee"], ["cat"]) for line in proc.stdout.splitlines()) == 3
    with Image.open(setup["tmp"] / "results_confusion.png") as png:
        assert png.format == "PNG"


def test_strict_fails_on_the_unreadable_file(setup, capsys):
    code = _run_script(["--config", setup["config"], "--ckpt", setup["ckpt"], "--strict",
                        "--out", setup["tmp"] / "strict.json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("eval.py: error: ") and "broken.png" in err[-1], err
    assert not (setup["tmp"] / "strict.json").exists()


@pytest.mark.parametrize("case", ["no_ckpt", "missing_ckpt", "class_mismatch", "baseline_only_compare"])
def test_input_errors_are_one_line(setup, capsys, case):
    args = {
        "no_ckpt": ["--config", setup["config"]],
        "missing_ckpt": ["--config", setup["config"], "--ckpt", setup["tmp"] / "nope.ckpt"],
        "class_mismatch": ["--config", setup["config"], "--ckpt", setup["ckpt"], "--data", setup["two"]],
        "baseline_only_compare": ["--config", setup["config"], "--ckpt", setup["ckpt"], "--compare-baseline",
                                  "--set", "ppt.enabled=false"],
    }[case]
    expected = {"no_ckpt": "--ckpt is required", "missing_ckpt": "nope.ckpt: no such file",
                "class_mismatch": "found 2 class folders but the model has num_classes=3",
                "baseline_only_compare": "ppt.enabled: false"}[case]
    code = _run_script(args + ["--out", setup["tmp"] / f"{case}.json"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("eval.py: error: ") and expected in err[0], err



def test_stored_names_in_another_order_than_the_folders_warn(setup, capsys):
    # Trained on folders ordered cat, bee, ant (e.g. names given to convert.py in another order): label 0 of
    # this split (ant) is the model's class 0 (cat). The report still names the model's classes.
    ckpt = setup["tmp"] / "reordered.ckpt"
    save_weights(_spread_head(setup["data"]), ckpt, meta={"class_names": ["cat", "bee", "ant"]})
    out = setup["tmp"] / "reordered.json"
    code = _run_script(["--config", setup["config"], "--ckpt", ckpt, "--per-class", "--out", out])
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert code == 0
    assert err == [f"eval.py: warning: {setup['data'] / 'val'}: the class folders (the labels, in sorted order) are "
                   f"not the class names stored in {ckpt} (class 0 is 'ant' vs 'cat'): a label may not be the "
                   f"model's class of that name"]
    report = json.loads(out.read_text())
    assert report["class_names"] == ["cat", "bee", "ant"] and report["class_names_source"] == f"the metadata of {ckpt}"
