"""Fine-tuning with distillation: the distill config section, DeiT's loss by hand, the frozen teacher inside the
compiled step (graph mode), its hash in the training state and resume checks, and the refused teachers."""
import json

import mindspore as ms
import numpy as np
import pytest
import yaml
from mindspore import Tensor

from src.config import ConfigError, load_config
from src.io.checkpoint import save_weights
from src.train import ResumeError, engine, train
from src.train.distill import TEACHER_PREFIX, weights_sha256
from src.train.loss import DistillationLoss, SoftTargetCrossEntropy

from ..conftest import ROOT
from .test_train import TINY, _params, _state_record, image_folder, tiny_model, write_config  # noqa: F401

LN2, LN4 = 0.6931471805599453, 1.3862943611198906


def test_distill_section_defaults_and_overrides():
    cfg = load_config(ROOT / "config" / "demo.yaml")
    assert cfg["distill"] == {"type": "none", "teacher": "self", "teacher_config": None, "alpha": 0.5, "tau": 1.0}
    cfg = load_config(ROOT / "config" / "demo.yaml", ["distill.type=soft", "distill.tau=2", "distill.alpha=0.25"])
    assert cfg["distill"]["type"] == "soft" and cfg["distill"]["tau"] == 2.0 and cfg["distill"]["alpha"] == 0.25


@pytest.mark.parametrize("override, message", [
    ("distill.type=kd", "distill.type: expected one of 'none', 'soft', 'hard', got \"kd\""),
    ("distill.alpha=1.5", "distill.alpha: expected a float in [0, 1], got 1.5"),
    ("distill.tau=0", "distill.tau: expected a float > 0, got 0"),
    ("distill.teacher_config=x.yaml", "distill.teacher_config: expected null with distill.teacher self"),
])
def test_distill_config_errors(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "config" / "demo.yaml", [override])
    assert message in str(err.value) and "\n" not in str(err.value)


def _loss(kind, alpha, tau, logits, kd_logits, teacher, targets):
    loss = DistillationLoss(SoftTargetCrossEntropy(), kind, alpha, tau)
    args = [Tensor(np.array(a, np.float32)) for a in (logits, kd_logits, teacher, targets)]
    return float(loss(*args).asnumpy())


def test_soft_distillation_by_hand(pynative):
    # Teacher row 0 at tau 2: softmax([1, 0]) = p = [0.731059, 0.268941]; the student is uniform, q = [0.5, 0.5]:
    # KL(p || q) = 0.731059 ln(1.462117) + 0.268941 ln(0.537883) = 0.110944. Row 1: both uniform, KL 0.
    # DeiT: tau^2 * (0.110944 + 0) / (2 images x 2 classes) = 0.110944. Base: CE of uniform logits = ln 2.
    zeros, onehot, teacher = [[0, 0], [0, 0]], [[1, 0], [0, 1]], [[2, 0], [0, 0]]
    kd = 4 * 0.1109441 / 4
    assert _loss("soft", 0.25, 2.0, zeros, zeros, teacher, onehot) == pytest.approx(0.75 * LN2 + 0.25 * kd, rel=1e-5)
    assert _loss("soft", 1.0, 2.0, zeros, zeros, teacher, onehot) == pytest.approx(kd, rel=1e-5)
    assert _loss("soft", 0.0, 2.0, zeros, zeros, teacher, onehot) == pytest.approx(LN2, rel=1e-5)
    # tau 1: p = softmax([2, 0]) = [0.880797, 0.119203]: KL = 0.880797 ln(1.761594) + 0.119203 ln(0.238406)
    # = 0.880797 x 0.566219 - 0.119203 x 1.433781 = 0.327813; / 4 logits = 0.081953 (tau^2 = 1).
    assert _loss("soft", 1.0, 1.0, zeros, zeros, teacher, onehot) == pytest.approx(0.327813 / 4, rel=1e-5)


def test_hard_distillation_by_hand(pynative):
    # The teacher's top-1 classes are 0 and 1. The distillation head: row 0 uniform -> CE ln 2; row 1 softmax
    # [ln 3, 0] = [0.75, 0.25] -> CE of class 1 = ln 4. Mean (ln 2 + ln 4) / 2. The class head (zeros) has CE ln 2
    # against the labels, whatever the distillation head does.
    zeros, onehot = [[0, 0], [0, 0]], [[1, 0], [0, 1]]
    kd_logits, teacher = [[0, 0], [np.log(3), 0]], [[5, 1], [0, 3]]
    hard = (LN2 + LN4) / 2
    assert _loss("hard", 0.5, 1.0, zeros, kd_logits, teacher, onehot) == pytest.approx(0.5 * LN2 + 0.5 * hard, rel=1e-5)
    assert _loss("hard", 0.5, 7.0, zeros, kd_logits, teacher, onehot) == pytest.approx(0.5 * LN2 + 0.5 * hard, rel=1e-5)
    assert _loss("hard", 1.0, 1.0, zeros, kd_logits, teacher, onehot) == pytest.approx(hard, rel=1e-5)


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield


def _distill_config(tmp_path, image_folder, extra=None):
    """The tiny training config (Mixup and label smoothing on: soft targets) with soft self-distillation."""
    path = write_config(tmp_path, image_folder)
    doc = yaml.safe_load(path.read_text())
    doc["distill"] = dict({"type": "soft", "teacher": "self", "alpha": 0.5, "tau": 2.0}, **(extra or {}))
    path.write_text(yaml.safe_dump(doc))
    return load_config(path)


def _start_weights(path, **kw):
    ms.set_seed(1)
    model = tiny_model(ppt=False, **kw)
    save_weights(model, path)
    return model


class _KeepTeacher:
    """Wraps engine.build_teacher and keeps what it built."""

    def __init__(self, real):
        self.real, self.built = real, []

    def __call__(self, cfg, weights):
        teacher = self.real(cfg, weights)
        self.built.append(teacher)
        return teacher


def test_self_distillation_trains_in_graph_mode_with_a_frozen_teacher(tmp_path, image_folder, graph_mode,
                                                                      monkeypatch):
    """Graph mode, Mixup soft targets: the student learns, the teacher stays the starting weights and is not in
    the state (only its hash); a resume rebuilds it from the recorded file (through the same setup as the first
    run, so in PyNative: a resumed run's new Cells would compile the same step again, ~12 s), and refuses another
    teacher."""
    cfg = _distill_config(tmp_path, image_folder)
    start = tmp_path / "start.ckpt"
    reference = _start_weights(start)
    keep = _KeepTeacher(engine.build_teacher)
    monkeypatch.setattr(engine, "build_teacher", keep)
    out = tmp_path / "out"
    result = train(cfg, output_dir=out, ckpt_file=str(start), stop_after_epoch=1, progress=False)
    assert result.epochs_run == 1 and np.isfinite(result.history[0]["train_loss"])
    teacher = keep.built[0].model
    for name, p in teacher.parameters_and_names():
        assert p.name == TEACHER_PREFIX + name and not p.requires_grad
        np.testing.assert_array_equal(p.asnumpy(), dict(reference.parameters_and_names())[name].asnumpy())
    trained = _params(out / "epoch_0001.ckpt")
    assert any(not np.array_equal(trained[n], p.asnumpy()) for n, p in reference.parameters_and_names())
    state = _params(out / "epoch_0001.state.ckpt")
    assert not any(k.startswith(TEACHER_PREFIX) for k in state)
    record = _state_record(out / "epoch_0001.state.ckpt")["teacher"]
    assert record["weights_sha256"] == weights_sha256(reference) and record["weights_file"] == str(start)
    assert record["ppt"]["enabled"] is False

    # Another teacher behind the same path: refused before any step, one line naming the difference.
    ms.set_context(mode=ms.PYNATIVE_MODE)
    save_weights(tiny_model(ppt=False), start)
    with pytest.raises(ResumeError, match=r"written with another teacher: the teacher's weights differ: sha256 "
                                          rf"{record['weights_sha256'][:12]} \(the file's") as err:
        train(cfg, output_dir=out, resume=str(out), progress=False)
    assert "\n" not in str(err.value)
    save_weights(reference, start)  # the same teacher again: the run continues
    assert train(cfg, output_dir=out, resume=str(out), progress=False).epochs_run == 1
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_a_resume_with_another_teacher_config_names_the_key(tmp_path, image_folder, pynative):
    start = tmp_path / "start.ckpt"
    _start_weights(start)
    cfg = _distill_config(tmp_path, image_folder, {"teacher": str(start)})
    out = tmp_path / "out"
    train(cfg, output_dir=out, ckpt_file=str(start), stop_after_epoch=1, progress=False)
    wide = tmp_path / "wide.ckpt"
    _start_weights(wide, embed_dim=96)
    teacher_cfg = yaml.safe_load((out / "config.yaml").read_text())
    teacher_cfg["model"]["embed_dim"] = 96
    (tmp_path / "teacher.yaml").write_text(yaml.safe_dump(teacher_cfg))
    other = dict(cfg, distill=dict(cfg["distill"], teacher=str(wide), teacher_config=str(tmp_path / "teacher.yaml")))
    with pytest.raises(ResumeError, match=r"another teacher: teacher model\.embed_dim: the file has 48, this run "
                                          r"has 96"):
        train(other, output_dir=out, resume=str(out), progress=False)
    no_teacher = dict(cfg, distill=dict(cfg["distill"], type="none"))
    with pytest.raises(ResumeError, match=r"distill\.type: the file has \"soft\", this run has \"none\""):
        train(no_teacher, output_dir=out, resume=str(out), progress=False)


def test_refused_teachers_say_why_in_one_line_before_anything_is_written(tmp_path, image_folder, pynative):
    cfg = _distill_config(tmp_path, image_folder)
    start = tmp_path / "start.ckpt"
    _start_weights(start)
    five = tmp_path / "five.ckpt"
    _start_weights(five, num_classes=5)
    shallow = tmp_path / "shallow.ckpt"
    _start_weights(shallow, depth=1)

    def teacher_yaml(name, **model):
        doc = yaml.safe_load((tmp_path / "tiny.yaml").read_text())
        doc["model"].update(model)
        doc.pop("distill")
        (tmp_path / name).write_text(yaml.safe_dump(doc))
        return str(tmp_path / name)

    def checkpoint_teacher(weights, config=None):
        return dict(cfg, distill=dict(cfg["distill"], teacher=str(weights), teacher_config=config))

    cases = [
        (cfg, None, r"distill.teacher is self \(this model without PPT, with the fine-tuning's starting weights\) but "
                    r"no starting weights were given: the teacher would be random weights"),
        (cfg, five, r"the self teacher \(starting weights .*five.ckpt\): the weights have 5 classes, the student has "
                    r"3; a self teacher needs a trained classifier"),
        (checkpoint_teacher(five, teacher_yaml("t5.yaml", num_classes=5)), start,
         r"teacher .*five.ckpt \(teacher config .*t5.yaml\): 5 classes, the student has 3"),
        (checkpoint_teacher(start, teacher_yaml("t64.yaml", img_size=64)), start,
         r"teacher .*start.ckpt \(teacher config .*t64.yaml\): image size 64, the student's is 32"),
        (checkpoint_teacher(shallow), start,
         r"teacher .*shallow.ckpt \(this config's model without PPT\): .*shallow.ckpt does not match the model: "
         r"missing \d+: \[blocks.1"),
        (checkpoint_teacher(tmp_path / "gone.ckpt"), start, r"teacher .*gone.ckpt .*: no such weights file"),
    ]
    out = tmp_path / "never"
    for config, weights, message in cases:
        with pytest.raises((ValueError, FileNotFoundError), match=message) as err:
            train(config, output_dir=out, ckpt_file=str(weights) if weights else None, progress=False)
        assert "\n" not in str(err.value)
    assert not out.exists()


def test_train_py_refuses_a_self_teacher_without_starting_weights(capsys, tmp_path):
    from ..run_scripts import run_script

    out = tmp_path / "never"
    code, stdout, err = run_script(ROOT / "train.py", ["--set", "distill.type=soft", "--output_dir", str(out)], capsys)
    assert code == 1 and err == ["train.py: error: distill.teacher is self (this model without PPT, with the "
                                 "fine-tuning's starting weights) but no starting weights were given: the teacher "
                                 "would be random weights"], err
    assert not out.exists()


def test_hard_distillation_trains_the_distillation_head_in_graph_mode(graph_mode):
    """A distilled student: the class head learns the labels, the distillation head the teacher's top-1 class
    (here the opposite of the labels), in one compiled step; the teacher's weights stay as they were."""
    from mindspore import nn

    from src.models import create_model
    from src.train.distill import DistillationNet, TrainHeads
    from src.train.optim import param_groups
    from src.train.step import TrainStep

    ms.set_seed(0)
    student = create_model("deit_tiny_distilled_patch16_224", num_classes=3, **TINY)
    teacher = tiny_model(ppt=False)
    for name, p in teacher.parameters_and_names():
        p.name, p.requires_grad = TEACHER_PREFIX + name, False
    before = {p.name: p.asnumpy().copy() for p in teacher.get_parameters()}
    # Biased so that its top-1 class is always 2 (whatever the image).
    teacher.head.bias.set_data(Tensor(np.array([0.0, 0.0, 50.0], np.float32)))
    before[TEACHER_PREFIX + "head.bias"] = teacher.head.bias.asnumpy().copy()
    opt = nn.AdamWeightDecay(param_groups(student.trainable_params(), 0.0), learning_rate=[3e-3] * 40)
    net = DistillationNet(TrainHeads(student), teacher, DistillationLoss(SoftTargetCrossEntropy(), "hard", 0.5, 1.0))
    step = TrainStep(net, opt)
    step.set_train(True)
    teacher.set_train(False)
    rng = np.random.default_rng(0)
    labels = np.arange(12) % 2  # classes 0 and 1; the teacher always says 2
    images = rng.normal(0, 0.3, (12, 3, 32, 32)).astype(np.float32)
    images[np.arange(12), labels] += 1.5
    targets = Tensor(np.eye(3, dtype=np.float32)[labels])
    for _ in range(30):
        loss, finite, _ = step(Tensor(images), targets)
        assert bool(finite.asnumpy())
    cls, dist = (o.asnumpy() for o in student.forward_heads(Tensor(images)))
    assert (cls.argmax(1) == labels).mean() > 0.9 and (dist.argmax(1) == 2).all()
    assert all(np.array_equal(p.asnumpy(), before[p.name]) for p in teacher.get_parameters())
