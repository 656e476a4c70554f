"""Training: recipe parts (param groups, schedule, loss, EMA, clipping, loss scaling), loss going down,
exact resume (slow), divergence and resume-file errors, refused starts, the train/aug config sections."""

import json
import os
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn
from PIL import Image

from src.config import SCHEMA, ConfigError, load_config
from src.models import create_model
from src.train import ResumeError, TrainingDiverged, engine, train
from src.train.ema import ModelEMA
from src.train.loss import SoftTargetCrossEntropy, SparseCrossEntropy
from src.train.optim import adam_bias_correction, lr_schedule, param_groups, scaled_lr
from src.train.state import find_resume_file, load_training_state
from src.train.step import TrainStep, clip_by_global_norm, global_norm

from ..conftest import ROOT

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3)


COLOURS = [(220, 40, 40), (40, 200, 60), (50, 60, 230)]


def tiny_model(ppt=True, num_classes=3, **kw):
    spec = {"r": 3, "layers": [0], "threshold": 1e-4, "prop_attn": True} if ppt else None
    return create_model("deit_tiny_patch16_224", num_classes=num_classes, ppt=spec, **dict(TINY, **kw))


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """3 classes of coloured squares on noise, 12 train and 4 val images each (36 px, cropped to 32)."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("val", 4)):
        for label, colour in enumerate(COLOURS):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                img = rng.integers(0, 80, (36, 36, 3)).astype(np.uint8)
                y, x = rng.integers(2, 16, 2)
                img[y:y + 16, x:x + 16] = colour
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


def write_config(tmp_path, data_root, batch_size=12, **train_overrides):
    train_cfg = dict(dict(epochs=2, warmup_epochs=1, base_lr=0.02, min_lr=1e-5, warmup_lr=1e-4, log_interval=100,
                          keep_checkpoints=2), **train_overrides)
    cfg = {
        "seed": 3,
        "model": dict(name="deit_tiny_patch16_224", num_classes=3, **TINY),
        "ppt": {"enabled": True, "r": 3, "layers": [0], "threshold": 1e-4},
        "data": {"path": str(data_root), "batch_size": batch_size, "num_workers": 1},
        "train": train_cfg,
        # Mixup and label smoothing on (soft targets); image-level randomness off except flips.
        "aug": {"randaug_magnitude": 0, "erase_prob": 0.25, "mixup_alpha": 0.8, "cutmix_alpha": 0.0,
                "scale": [0.5, 1.0]},
    }
    path = tmp_path / "tiny.yaml"
    import yaml
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield


def test_param_groups_exclude_norms_biases_embeddings_and_tokens():
    model = create_model("deit_tiny_distilled_patch16_224", num_classes=3, **TINY)
    decay, no_decay = param_groups(model.trainable_params(), 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    names = {p.name for p in no_decay["params"]}
    assert {"pos_embed", "cls_token", "dist_token", "norm.weight", "norm.bias", "head.bias",
            "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "patch_embed.proj.bias"} <= names
    decayed = {p.name for p in decay["params"]}
    assert {"blocks.0.attn.qkv.weight", "blocks.1.mlp.fc2.weight", "head.weight", "head_dist.weight",
            "patch_embed.proj.weight"} <= decayed
    assert all(p.ndim >= 2 for p in decay["params"])
    assert len(decayed) + len(names) == len(model.trainable_params())


def test_lr_schedule_warmup_and_cosine():
    assert scaled_lr(5e-4, 1024) == pytest.approx(1e-3)
    lr = lr_schedule(peak_lr=1e-3, min_lr=1e-5, warmup_lr=1e-6, epochs=10, warmup_epochs=2, steps_per_epoch=5)
    assert lr.shape == (50,)
    assert lr[0] == pytest.approx(1e-6)
    assert lr[5] == pytest.approx(1e-6 + (1e-3 - 1e-6) / 2)  # half-way through the warm-up
    assert lr[10] == pytest.approx(1e-3)  # peak right after the warm-up
    assert np.all(np.diff(lr[:11]) > 0) and np.all(np.diff(lr[10:]) < 0)
    expected_last = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + np.cos(np.pi * 39 / 40))
    assert lr[-1] == pytest.approx(expected_last, rel=1e-5)
    assert lr[-1] > 1e-5
    with pytest.raises(ValueError, match="warmup_epochs < epochs"):
        lr_schedule(1e-3, 1e-5, 1e-6, epochs=2, warmup_epochs=2, steps_per_epoch=5)
    corr = adam_bias_correction(3, (0.9, 0.999))
    assert corr[0] == pytest.approx(np.sqrt(1 - 0.999) / (1 - 0.9), rel=1e-6)
    assert corr[2] == pytest.approx(np.sqrt(1 - 0.999 ** 3) / (1 - 0.9 ** 3), rel=1e-6)


def test_soft_target_loss_with_smoothed_and_mixed_targets():
    from src.data.transforms import BatchAugment

    defaults = {key: row.default for key, row in SCHEMA["aug"].items()}
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 5)).astype(np.float32)
    labels = np.array([0, 3, 4, 1], np.int32)
    aug = {**defaults, "erase_prob": 0.0, "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "label_smoothing": 0.1}
    _, targets = BatchAugment(5, aug, seed=0)(np.zeros((4, 3, 4, 4), np.float32), labels)
    assert np.allclose(targets[np.arange(4), labels], 0.9 + 0.1 / 5) and np.allclose(targets.sum(1), 1)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    expected = float(-(targets * logp).sum(1).mean())
    got = float(SoftTargetCrossEntropy()(Tensor(logits), Tensor(targets)).asnumpy())
    assert got == pytest.approx(expected, rel=1e-5)
    sparse = float(SparseCrossEntropy(5)(Tensor(logits), Tensor(labels)).asnumpy())
    assert sparse == pytest.approx(float(-logp[np.arange(4), labels].mean()), rel=1e-5)
    mixed_aug = {**defaults, "erase_prob": 0.0, "mixup_alpha": 0.8, "cutmix_alpha": 0.0, "label_smoothing": 0.1}
    _, mixed = BatchAugment(5, mixed_aug, seed=1)(np.zeros((4, 3, 4, 4), np.float32), labels)
    assert np.allclose(mixed.sum(1), 1)
    lam = (mixed[0, 0] - 0.02) / 0.9  # row 0 = lam * y0 + (1 - lam) * y3 (label 1)
    assert 0 < lam < 1
    assert mixed[0, 1] == pytest.approx((1 - lam) * 0.9 + 0.02, abs=1e-6)


def test_ema_update_formula(pynative):
    params = [ms.Parameter(Tensor(np.array([1.0, 2.0], np.float32)), name="w")]
    ema = ModelEMA(params, decay=0.9)
    params[0].set_data(Tensor(np.array([3.0, 0.0], np.float32)))
    ema()
    assert np.allclose(ema.shadows[0].asnumpy(), [0.9 * 1 + 0.1 * 3, 0.9 * 2 + 0.1 * 0])
    assert ema.shadows[0].name == "ema.w"


def test_clip_by_global_norm(pynative):
    grads = (Tensor(np.array([3.0], np.float32)), Tensor(np.array([[4.0]], np.float32)))
    norm = global_norm(grads)
    assert float(norm.asnumpy()) == pytest.approx(5.0)
    clipped = clip_by_global_norm(grads, 1.0, norm)
    assert float(global_norm(clipped).asnumpy()) == pytest.approx(1.0, rel=1e-5)
    kept = clip_by_global_norm(grads, 10.0, norm)
    assert np.allclose(kept[0].asnumpy(), 3.0)


def _step_cell(model, scaler=None, clip_grad=0.0, lr=1e-3, steps=20):
    opt = nn.AdamWeightDecay(param_groups(model.trainable_params(), 0.05), learning_rate=[lr] * steps)
    return TrainStep(nn.WithLossCell(model, SoftTargetCrossEntropy()), opt, scaler=scaler, clip_grad=clip_grad), opt


def test_loss_scaler_skips_overflowing_step(pynative):
    model = tiny_model(ppt=False)
    step, opt = _step_cell(model, scaler=ms.amp.DynamicLossScaler(1024.0, 2, 100))
    before = {p.name: p.asnumpy().copy() for p in model.trainable_params()}
    images = np.zeros((2, 3, 32, 32), np.float32)
    images[0, 0, 0, 0] = np.inf
    targets = Tensor(np.eye(3, dtype=np.float32)[[0, 1]])
    loss, finite, _ = step(Tensor(images), targets)
    assert not bool(finite.asnumpy())
    assert float(step.loss_scale.asnumpy()) == 512.0  # halved
    assert int(opt.global_step.asnumpy()[0]) == 0  # optimizer not run
    assert all(np.array_equal(p.asnumpy(), before[p.name]) for p in model.trainable_params())
    loss, finite, _ = step(Tensor(np.zeros((2, 3, 32, 32), np.float32)), targets)
    assert bool(finite.asnumpy()) and int(opt.global_step.asnumpy()[0]) == 1


def test_few_steps_lower_the_loss_in_graph_mode(graph_mode):
    ms.set_seed(0)
    model = tiny_model(ppt=True)
    step, _ = _step_cell(model, clip_grad=1.0, lr=2e-3)
    step.set_train(True)
    rng = np.random.default_rng(0)
    labels = np.arange(12) % 3
    images = rng.normal(0, 0.3, (12, 3, 32, 32)).astype(np.float32)
    images[np.arange(12), labels] += 1.5  # the class is the brightest channel
    targets = np.eye(3, dtype=np.float32)[labels]
    losses = [float(step(Tensor(images), Tensor(targets))[0].asnumpy()) for _ in range(12)]
    assert losses[-1] < 0.5 * losses[0], losses


def _params(path):
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items() if not k.startswith("meta.")}


@pytest.fixture(scope="module")
def first_epoch(tmp_path_factory, image_folder):
    """A run of the tiny config (EMA, clipping on) stopped after epoch 1 of 2: (config, output folder)."""
    ms.set_context(mode=ms.PYNATIVE_MODE)  # a few steps: cheaper than compiling the train step
    folder = tmp_path_factory.mktemp("run")
    cfg = load_config(write_config(folder, image_folder, ema=True, ema_decay=0.9, clip_grad=5.0))
    result = train(cfg, output_dir=folder / "out", stop_after_epoch=1, progress=False)
    assert result.epochs_run == 1
    return cfg, folder / "out"


def test_epoch_outputs_are_loadable_and_logged(first_epoch):
    cfg, out = first_epoch
    names = sorted(p.name for p in out.iterdir())
    assert names == ["best.ckpt", "best_ema.ckpt", "config.yaml", "epoch_0001.ckpt", "epoch_0001.ema.ckpt",
                     "epoch_0001.state.ckpt", "log.jsonl"]
    from src.io.checkpoint import load_weights, read_checkpoint_meta, read_class_names
    for name in ("best.ckpt", "epoch_0001.ema.ckpt"):
        load_weights(tiny_model(), out / name)  # strict: what eval.py --ckpt does
    assert read_checkpoint_meta(out / "best.ckpt")["epoch"] == 1
    # Every weights file names the classes its labels stood for: the training split's sorted class folders.
    for name in ("best.ckpt", "best_ema.ckpt", "epoch_0001.ckpt", "epoch_0001.ema.ckpt"):
        assert read_class_names(out / name) == ["c0", "c1", "c2"], name
    assert _state_record(out / "epoch_0001.state.ckpt")["class_names"] == ["c0", "c1", "c2"]
    (record,) = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert record["epoch"] == 1 and record["global_step"] == 3 and np.isfinite(record["train_loss"])
    assert {"top1", "top5", "pooled_fraction", "svar_mean", "macs"} <= set(record["val"]) and "val_ema" in record
    assert load_config(out / "config.yaml") == cfg


def _state_record(path):
    return json.loads(ms.load_checkpoint(str(path))["meta.train_state"])


def _copy_run(src, dst):
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


class _NanAfterFirstEpoch:
    """Wraps engine.train_dataset: from epoch 2 on, the images are NaN."""

    def __init__(self, real):
        self.real = real

    def __call__(self, cfg, epoch, dist):
        dataset, info = self.real(cfg, epoch, dist)
        if epoch == 0:
            return dataset, info

        class Poisoned:
            def create_tuple_iterator(self, **kwargs):
                for images, targets in dataset.create_tuple_iterator(**kwargs):
                    yield np.full_like(images, np.nan), targets
        return Poisoned(), info


def test_nan_loss_stops_and_keeps_the_last_checkpoint(first_epoch, tmp_path, pynative, monkeypatch):
    cfg, done = first_epoch
    out = _copy_run(done, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(engine, "train_dataset", _NanAfterFirstEpoch(engine.train_dataset))
    with pytest.raises(TrainingDiverged) as err:
        train(cfg, output_dir=out, resume=str(out), progress=False)
    message = str(err.value)
    assert "\n" not in message and "epoch 2 step 1" in message and "not finite" in message
    assert str(out / "epoch_0001.state.ckpt") in message
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written, nothing removed


def test_resume_file_errors(first_epoch, tmp_path, pynative):
    cfg, out = first_epoch
    state = out / "epoch_0001.state.ckpt"
    corrupt = tmp_path / "corrupt.state.ckpt"
    corrupt.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(ResumeError, match="not a readable MindSpore checkpoint") as err:
        train(cfg, output_dir=tmp_path / "x", resume=str(corrupt), progress=False)
    assert "\n" not in str(err.value)

    weights_only = tmp_path / "w.state.ckpt"
    weights_only.write_bytes((out / "epoch_0001.ckpt").read_bytes())
    with pytest.raises(ResumeError, match="not a training state"):
        train(cfg, output_dir=tmp_path / "x", resume=str(weights_only), progress=False)

    other = dict(cfg, train=dict(cfg["train"], epochs=3))
    with pytest.raises(ResumeError, match=r"train\.epochs: the file has 2, this run has 3"):
        train(other, output_dir=tmp_path / "x", resume=str(state), progress=False)
    wider = dict(cfg, model=dict(cfg["model"], embed_dim=96))
    with pytest.raises(ResumeError, match=r"model\.embed_dim: the file has 48, this run has 96"):
        train(wider, output_dir=tmp_path / "x", resume=str(state), progress=False)

    # Other class folders would change what the labels mean; a state written before names were stored resumes.
    renamed = tmp_path / "renamed"
    for split in ("train", "val"):
        for label in range(3):
            (renamed / split).mkdir(parents=True, exist_ok=True)
            os.symlink(Path(cfg["data"]["path"]) / split / f"c{label}", renamed / split / f"k{label}")
    moved = dict(cfg, data=dict(cfg["data"], path=str(renamed)))
    with pytest.raises(ResumeError, match=r"written for other class folders \(class 0 is 'c0' vs 'k0': the file's "
                                          r"vs this run's\); the labels would change meaning"):
        train(moved, output_dir=tmp_path / "x", resume=str(state), progress=False)
    old = tmp_path / "old.state.ckpt"
    entries = ms.load_checkpoint(str(state))
    record = {k: v for k, v in json.loads(entries.pop("meta.train_state")).items() if k != "class_names"}
    ms.save_checkpoint([{"name": n, "data": p} for n, p in entries.items()], str(old),
                       append_dict={"meta.train_state": json.dumps(record)})
    assert train(moved, output_dir=tmp_path / "y", resume=str(old), stop_after_epoch=1, progress=False).epochs_run == 0

    assert find_resume_file(out) == state and find_resume_file(out / "epoch_0001.ckpt") == state
    with pytest.raises(ResumeError, match="no training state epoch_0001.state.ckpt"):
        find_resume_file(tmp_path / "epoch_0001.ckpt")
    with pytest.raises(ResumeError, match="has no epoch_N.state.ckpt"):
        find_resume_file(tmp_path)
    with pytest.raises(ResumeError, match="no such file"):
        load_training_state(nn.Cell(), nn.Cell(), tmp_path / "missing.state.ckpt", cfg, 1)


def test_pretrained_weights_with_another_class_count_drop_the_head(tmp_path, capsys):
    from src.io.checkpoint import save_weights

    source = tiny_model(num_classes=5)
    save_weights(source, tmp_path / "pre.ckpt")
    target = tiny_model(num_classes=3)
    engine._load_pretrained(target, str(tmp_path / "pre.ckpt"), engine._Dist())
    assert "drop_head" in capsys.readouterr().out
    np.testing.assert_array_equal(target.blocks[0].attn.qkv.weight.asnumpy(),
                                  source.blocks[0].attn.qkv.weight.asnumpy())


def test_a_run_that_cannot_start_writes_nothing(image_folder, tmp_path):
    """Bad starting points are refused before the output folder (or anything in it) is created."""
    cfg = load_config(write_config(tmp_path, image_folder))
    out = tmp_path / "never"
    cases = [
        (dict(ckpt_file=str(tmp_path / "nope.ckpt")), FileNotFoundError, "starting weights .*nope.ckpt: no such file"),
        (dict(resume=str(tmp_path / "gone")), ResumeError, "gone: no such training state file or output folder"),
        (dict(ckpt_file="a.ckpt", resume="b"), ValueError, "exclude each other"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            train(cfg, output_dir=out, progress=False, **kwargs)
    finetune = dict(cfg, train=dict(cfg["train"], finetune=True))
    with pytest.raises(ValueError, match="train.finetune is true .* no starting weights"):
        train(finetune, output_dir=out, progress=False)
    assert not out.exists()


def test_aug_section_holds_what_the_pipeline_reads():
    from src.data.transforms import BatchAugment, TrainTransform

    assert sorted(SCHEMA["aug"]) == sorted(TrainTransform.KEYS + BatchAugment.KEYS)


@pytest.mark.parametrize("override, message", [
    ("train.warmup_epochs=30", "train.warmup_epochs: expected fewer than train.epochs (30), got 30"),
    ("train.loss_scale=none", "train.loss_scale: expected 'dynamic' or 'auto' with train.amp_level auto"),
    ("train.base_lr=0", "train.base_lr: expected a float > 0, got 0"),
    ("train.amp_level=O3", "train.amp_level: expected one of 'auto', 'O0', 'O2', got \"O3\""),
    ("aug.scale=[0.9,0.1]", "aug.scale: expected [lo, hi] with lo <= hi, got [0.9, 0.1]"),
    ("train.epoch=3", "train.epoch: unknown key (did you mean 'epochs'?)"),
])
def test_train_config_errors(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "config" / "demo.yaml", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_resume_gives_the_same_parameters(first_epoch, tmp_path, pynative):
    """2 epochs in one go == epoch 1, interrupted, then --resume for epoch 2 (weights, EMA, optimiser)."""
    cfg, done = first_epoch
    full = train(cfg, output_dir=tmp_path / "full", progress=False)
    assert full.epochs_run == 2
    part = _copy_run(done, tmp_path / "part")
    rest = train(cfg, output_dir=part, resume=str(part), progress=False)
    assert rest.epochs_run == 1
    for name in ("epoch_0002.ckpt", "epoch_0002.ema.ckpt", "epoch_0002.state.ckpt"):
        a, b = _params(tmp_path / "full" / name), _params(part / name)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=f"{name}: {key}")
    log = [json.loads(line) for line in (part / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]

