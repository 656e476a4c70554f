"""The fine-tuning recipe users came for: the fine-tune commands of the README and docs/training.md resolve to
the official PPT run's settings, and "auto" precision means float16 with loss scaling on Ascend/GPU only
(no training here)."""
import re
import shlex

import pytest

import train as train_script
from src.config import ConfigError, load_config
from src.train.optim import scaled_lr
from src.train.step import resolve_precision

from ..conftest import ROOT

# The official run (PPT README): DeiT's main.py defaults plus these, on 4 GPUs x 256 images.
OFFICIAL = {"epochs": 30, "warmup_epochs": 5, "lr": 1e-5, "per_gpu_batch": 256, "gpus": 4, "threshold": 6e-5,
            "r": 50, "layers": [3, 6, 9], "drop_path": 0.1, "ema_decay": 0.99996, "repeated_aug": 3}
FINETUNE_CONFIGS = sorted((ROOT / "config").glob("deit_*_finetune.yaml"))
DOCUMENTED = ("README.md", "docs/training.md")  # the user's path and the fine-tuning page


def readme_commands(marker: str):
    """Every command in a fenced code block of the README or docs/training.md that mentions ``marker``
    (continuations joined)."""
    text = "\n".join((ROOT / name).read_text(encoding="utf-8") for name in DOCUMENTED)
    commands = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.strip() for line in joined.splitlines() if marker in line]
    return commands


def parse_train_command(command: str):
    """(devices, parsed train.py args) of a ``python train.py ...`` or ``msrun ... train.py ...`` line."""
    words = shlex.split(command, comments=True)
    at = next(i for i, w in enumerate(words) if w == "train.py")
    devices = 1
    if words[0] == "msrun":
        options = dict(w.lstrip("-").split("=", 1) for w in words[1:at])
        devices = int(options["worker_num"])
        assert int(options["local_worker_num"]) == devices
    return devices, train_script.build_parser().parse_args(words[at + 1:])


def test_readme_fine_tune_commands_resolve_to_the_official_recipe():
    commands = readme_commands("_finetune.yaml")
    parsed = [parse_train_command(c) for c in commands if "train.py" in c]
    assert len(parsed) >= 4 and {devices for devices, _ in parsed} == {1, 8}
    for devices, args in parsed:
        assert args.device_target == "Ascend" and args.ckpt_file and args.resume is None
        cfg = load_config(ROOT / args.config_path, args.overrides)
        train, ppt, data = cfg["train"], cfg["ppt"], cfg["data"]
        assert (train["epochs"], train["warmup_epochs"]) == (OFFICIAL["epochs"], OFFICIAL["warmup_epochs"])
        assert (ppt["enabled"], ppt["r"], ppt["layers"], ppt["threshold"]) == (
            True, OFFICIAL["r"], OFFICIAL["layers"], OFFICIAL["threshold"])
        assert cfg["model"]["drop_path_rate"] == OFFICIAL["drop_path"]
        assert train["ema"] and train["ema_decay"] == OFFICIAL["ema_decay"]
        assert data["repeated_aug"] == OFFICIAL["repeated_aug"] and data["batch_size"] == OFFICIAL["per_gpu_batch"]
        assert train["finetune"] and any(o.startswith("data.path=") for o in args.overrides)
        assert resolve_precision(train["amp_level"], train["loss_scale"], args.device_target) == ("O2", "dynamic")
        # The official peak lr at the official global batch (DeiT's main.py: lr * batch * world / 512) ...
        official_batch = OFFICIAL["per_gpu_batch"] * OFFICIAL["gpus"]
        assert scaled_lr(train["base_lr"], official_batch) == pytest.approx(OFFICIAL["lr"] * official_batch / 512)
        # ... and the linear rule elsewhere, as the table of docs/training.md says.
        peak = scaled_lr(train["base_lr"], data["batch_size"] * devices)
        assert peak == pytest.approx({1: 5e-6, 8: 4e-5}[devices])


@pytest.mark.parametrize("path", FINETUNE_CONFIGS, ids=lambda p: p.stem)
def test_fine_tune_configs_hold_the_recipe(path):
    cfg = load_config(path)
    assert cfg["train"]["finetune"] and cfg["train"]["base_lr"] == OFFICIAL["lr"]
    assert cfg["ppt"]["threshold"] == OFFICIAL["threshold"] and cfg["train"]["epochs"] == OFFICIAL["epochs"]
    assert cfg["model"]["name"] + "_finetune" == path.stem


def test_fine_tune_configs_cover_tiny_small_base():
    assert [p.stem for p in FINETUNE_CONFIGS] == [f"deit_{s}_patch16_224_finetune" for s in ("base", "small", "tiny")]


@pytest.mark.parametrize("device, expected", [("Ascend", ("O2", "dynamic")), ("GPU", ("O2", "dynamic")),
                                              ("CPU", ("O0", "none"))])
def test_auto_precision(device, expected):
    assert resolve_precision("auto", "auto", device) == expected


def test_explicit_precision_and_unsafe_combinations():
    assert resolve_precision("O0", "dynamic", "CPU") == ("O0", "dynamic")
    assert resolve_precision("O2", "auto", "CPU") == ("O2", "dynamic")
    with pytest.raises(ConfigError, match="train.loss_scale: expected 'dynamic' or 'auto' with train.amp_level auto"):
        load_config(ROOT / "config" / "demo.yaml", ["train.loss_scale=none"])
    with pytest.raises(ValueError, match="needs loss scaling"):
        resolve_precision("auto", "none", "Ascend")
