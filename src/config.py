"""The project's configuration: the schema of every key (sections seed, model, ppt, data, train, aug), the
rules relating keys, and what a config builds (the model's architecture and PPT setting).

Every script reads one YAML file (``config/*.yaml``) plus ``section.key=value`` overrides through
:func:`load_config` (the machinery is :mod:`src.schema`): a plain nested dict with every default filled in,
or a :class:`ConfigError` of one line before any work starts. To add a key, add a row to :data:`SCHEMA`;
rules that relate several keys are its cross checks. ``config/README.md`` embeds the table printed by
``python -m src.config`` (a test keeps them in sync).
"""
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from .data import INTERPOLATIONS
from .io.fileio import PathLike, write_text_atomic
from .models import ARCH_OVERRIDES, ViTSpec, list_models, model_spec
from .schema import (
    REQUIRED,
    ConfigError,
    Key,
    KeyProblem,
    Schema,
    a_bool,
    a_float,
    a_str,
    an_int,
    ascending_int_list,
    float_list,
    hint,
    int_or_int_list,
    show,
)
from .token_reduction import PPTSetting, get_policy, list_policies, r_per_layer

__all__ = ["ConfigError", "SCHEMA", "AMP_LEVELS", "LOSS_SCALES", "DISTILL_TYPES", "SELF_TEACHER", "load_config",
           "save_config", "schema_markdown", "configured_spec", "ppt_setting", "model_kwargs"]

# ----------------------------------------------------------------------------------------------- schema

AMP_LEVELS = ("auto", "O0", "O2")
LOSS_SCALES = ("auto", "none", "dynamic")
DISTILL_TYPES = ("none", "soft", "hard")
SELF_TEACHER = "self"  # distill.teacher: the student's own starting weights without token reduction

_TABLE: dict[str, Key | dict[str, Key]] = {
    "seed": Key(an_int(0, 2 ** 32 - 1), 0, "seed of every random generator (init, shuffling, augmentation)"),
    "model": {
        "name": Key(a_str(), REQUIRED, "registered architecture, one of `src.models.list_models()`"),
        "num_classes": Key(an_int(1), 1000, "classifier outputs (1000 for ImageNet-1k)"),
        "img_size": Key(an_int(1, nullable=True), None,
                        "input resolution; null = the model's; must be a multiple of the patch size"),
        "patch_size": Key(an_int(1, nullable=True), None, "patch size; null = the model's (advanced)"),
        "embed_dim": Key(an_int(1, nullable=True), None,
                         "token width; null = the model's; must be a multiple of num_heads (advanced)"),
        "depth": Key(an_int(1, nullable=True), None, "number of blocks; null = the model's (advanced)"),
        "num_heads": Key(an_int(1, nullable=True), None, "attention heads; null = the model's (advanced)"),
        "mlp_ratio": Key(a_float(0, lo_open=True, nullable=True), None,
                         "MLP width / embed_dim; null = the model's (advanced)"),
        "drop_path_rate": Key(a_float(0, 1, hi_open=True), 0.0,
                              "stochastic depth rate of the last block (linear from 0); training only"),
    },
    "ppt": {
        "enabled": Key(a_bool(), True, "false = plain DeiT: the other ppt keys are then not used"),
        "policy": Key(a_str(), "ppt", "token-reduction policy, one of `src.token_reduction.list_policies()`: ppt "
                                      "(per image, prune or pool by score variance), prune (top-k by importance), "
                                      "pool (ToMe merging), keep_first (a timing baseline, not a method)"),
        "r": Key(int_or_int_list(0), REQUIRED,
                 "tokens removed at each PP block, or one value per entry of `layers`; clamped to (N-1)//2",
                 required_if="enabled"),
        "layers": Key(ascending_int_list(0), REQUIRED,
                      "0-based indices of the blocks that prune or pool tokens, each < model depth",
                      required_if="enabled"),
        "threshold": Key(a_float(0, nullable=True), None,
                         "score-variance threshold of the ppt policy (required there, unused by the others): "
                         "below it a PP block pools, else prunes; 0 = prune only, 1e9 = pool only"),
        "prop_attn": Key(a_bool(), True, "proportional attention: weight attention by pooled token sizes"),
    },
    "data": {
        "path": Key(a_str(), REQUIRED,
                    "dataset root with `train/<class>/...` and `val/<class>/...`, or `demo` (built-in set)"),
        "batch_size": Key(an_int(1), 64, "images per batch (per device)"),
        "num_workers": Key(an_int(1), 2, "parallel workers of the data pipeline"),
        "crop_pct": Key(a_float(0, 1, lo_open=True), 0.875,
                        "evaluation: resize the shorter side to img_size / crop_pct, then centre-crop"),
        "interpolation": Key(a_str(INTERPOLATIONS), "bicubic", "resize filter"),
        "mean": Key(float_list(3, 0, 1), [0.485, 0.456, 0.406],
                    "per-channel normalisation mean, RGB, on the 0-1 pixel scale (ImageNet)"),
        "std": Key(float_list(3, 0, 1, lo_open=True), [0.229, 0.224, 0.225],
                   "per-channel normalisation std, RGB, on the 0-1 pixel scale (ImageNet)"),
        "repeated_aug": Key(an_int(1), 1,
                            "training: repeated augmentation (DeiT's RASampler): every image of an epoch appears "
                            "this many times, the copies spread over the devices and augmented independently; an "
                            "epoch stays about one pass long; 1 = off"),
    },
    "train": {
        "epochs": Key(an_int(1), 300, "training epochs"),
        "base_lr": Key(a_float(0, lo_open=True), 5e-4,
                       "peak learning rate for a global batch of 512; used as base_lr * global batch / 512"),
        "min_lr": Key(a_float(0), 1e-5, "learning rate at the end of the cosine decay (not scaled by batch)"),
        "warmup_epochs": Key(an_int(0), 5, "epochs of linear warm-up from warmup_lr to the peak, per step"),
        "warmup_lr": Key(a_float(0), 1e-6, "learning rate at the first warm-up step (not scaled by batch)"),
        "weight_decay": Key(a_float(0), 0.05,
                            "AdamW decoupled weight decay; none on norms, biases, pos_embed, cls/dist tokens"),
        "betas": Key(float_list(2, 0, 1, hi_open=True), [0.9, 0.999], "AdamW beta1, beta2"),
        "eps": Key(a_float(0, lo_open=True), 1e-8, "AdamW epsilon"),
        "clip_grad": Key(a_float(0), 0.0, "clip gradients to this global L2 norm; 0 = no clipping"),
        "ema": Key(a_bool(), False, "keep an exponential moving average of the weights (validated and saved too)"),
        "ema_decay": Key(a_float(0, 1, hi_open=True), 0.99996, "EMA: ema = decay * ema + (1 - decay) * weights"),
        "finetune": Key(a_bool(), False,
                        "true = the recipe fine-tunes pretrained weights: training refuses to start without "
                        "starting weights (or a training state to resume)"),
        "amp_level": Key(a_str(AMP_LEVELS), "auto",
                         "mixed precision: O0 = float32, O2 = float16 network; auto = O2 on Ascend/GPU, O0 on CPU"),
        "loss_scale": Key(a_str(LOSS_SCALES), "auto",
                          "dynamic = scale the loss, skip steps whose gradients overflow (needed with O2); "
                          "auto = dynamic whenever the network runs in O2"),
        "loss_scale_init": Key(a_float(1), 65536.0, "dynamic loss scale: initial scale"),
        "loss_scale_window": Key(an_int(1), 2000, "dynamic loss scale: steps without overflow before doubling"),
        "max_skipped_steps": Key(an_int(1), 25,
                                 "consecutive overflow-skipped steps after which the run stops with an error"),
        "keep_checkpoints": Key(an_int(1), 3, "epoch checkpoints kept (the newest); best.ckpt is kept apart"),
        "log_interval": Key(an_int(1), 20, "steps between progress lines"),
        "train_split": Key(a_str(), "train", "training sub-folder of data.path"),
        "val_split": Key(a_str(), "val", "validation sub-folder of data.path, evaluated after every epoch"),
    },
    "aug": {
        "scale": Key(float_list(2, 0, 1, lo_open=True), [0.08, 1.0],
                     "RandomResizedCrop area range (lo <= hi), fractions of the image"),
        "ratio": Key(float_list(2, 0, lo_open=True), [0.75, 1.3333333333333333],
                     "RandomResizedCrop aspect-ratio range (lo <= hi)"),
        "hflip": Key(a_float(0, 1), 0.5, "horizontal flip probability; 0 = off"),
        "randaug_magnitude": Key(an_int(0, 10), 9, "RandAugment magnitude on timm's 0-10 scale, timm's "
                                                   "'increasing' op set (rand-m9-mstd0.5-inc1); 0 = off"),
        "randaug_num_ops": Key(an_int(1), 2, "RandAugment operations per image (chosen with replacement)"),
        "randaug_mstd": Key(a_float(0), 0.5, "RandAugment magnitude noise: each op draws N(magnitude, mstd), "
                                             "clipped to [0, 10]; 0 = fixed magnitude"),
        "randaug_prob": Key(a_float(0, 1), 0.5, "RandAugment: probability that each chosen op is applied"),
        "erase_prob": Key(a_float(0, 1), 0.25, "random erasing probability (per-pixel noise); 0 = off"),
        "mixup_alpha": Key(a_float(0), 0.8, "Mixup Beta(alpha, alpha); 0 = off"),
        "cutmix_alpha": Key(a_float(0), 1.0, "CutMix Beta(alpha, alpha); 0 = off"),
        "mixup_prob": Key(a_float(0, 1), 1.0, "probability that a batch is mixed at all"),
        "mixup_switch_prob": Key(a_float(0, 1), 0.5, "probability of CutMix instead of Mixup when both are on"),
        "label_smoothing": Key(a_float(0, 1, hi_open=True), 0.1, "label smoothing of the targets"),
    },
    "distill": {
        "type": Key(a_str(DISTILL_TYPES), "none",
                    "knowledge distillation from a frozen teacher (DeiT's losses): none; soft = KL divergence from "
                    "the teacher's softmax at temperature tau, times tau^2, averaged over images and classes; "
                    "hard = cross-entropy with the teacher's top-1 class. A distilled DeiT trains its distillation "
                    "head on it, another model its class head: (1 - alpha) * CE(labels) + alpha * distillation"),
        "teacher": Key(a_str(), SELF_TEACHER,
                       "self = this model without token reduction and with the starting weights (PPT learns to "
                       "match the model it came from); or a weights file of any model this project builds "
                       "(described by teacher_config)"),
        "teacher_config": Key(a_str(nullable=True), None,
                              "config YAML of a weights-file teacher (its model and ppt sections); null = this "
                              "config's model with PPT off; must be null for the self teacher"),
        "alpha": Key(a_float(0, 1), 0.5, "weight of the distillation term (DeiT's 0.5)"),
        "tau": Key(a_float(0, lo_open=True), 1.0, "temperature of soft distillation (DeiT's 1.0)"),
    },
}

def _arch_values(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The registered architecture of ``model.name`` with the config's non-null overrides, unchecked."""
    name, names = cfg["model"]["name"], list_models()
    if name not in names:
        raise KeyProblem("model.name", f"expected one of {', '.join(names)}, got {show(name)}{hint(name, names)}")
    values = dataclasses.asdict(model_spec(name))
    values.update({k: cfg["model"][k] for k in ARCH_OVERRIDES if cfg["model"][k] is not None})
    return values


# Architecture values that must divide each other: (multiple, divisor, how messages name each).
_DIVISIBLE = (("img_size", "patch_size", "the image size", "the patch size"),
              ("embed_dim", "num_heads", "embed_dim", "num_heads"))


def _check_model(cfg: dict[str, Any]) -> None:
    model, arch = cfg["model"], _arch_values(cfg)
    for big, small, big_text, small_text in _DIVISIBLE:
        if arch[big] % arch[small]:
            if model[big] is not None:  # blame the key the config set
                raise KeyProblem(f"model.{big}", f"expected a multiple of {small_text} {arch[small]}, got {arch[big]}")
            raise KeyProblem(f"model.{small}", f"expected a divisor of {big_text} {arch[big]}, got {arch[small]}")


def _check_ppt(cfg: dict[str, Any]) -> None:
    ppt = cfg["ppt"]
    if not ppt["enabled"]:
        return
    depth = _arch_values(cfg)["depth"]
    if any(i >= depth for i in ppt["layers"]):
        raise KeyProblem("ppt.layers", f"expected block indices in [0, {depth}) (the model has {depth} blocks), "
                                       f"got {show(ppt['layers'])}")
    try:
        r_per_layer(ppt["r"], ppt["layers"])
    except ValueError as e:
        raise KeyProblem("ppt.r", str(e)) from None
    policies = list_policies()
    if ppt["policy"] not in policies:
        raise KeyProblem("ppt.policy", f"expected one of {', '.join(policies)}, got {show(ppt['policy'])}"
                                       f"{hint(ppt['policy'], policies)}")
    if get_policy(ppt["policy"]).uses_threshold and ppt["threshold"] is None:
        raise KeyProblem("ppt.threshold", f"missing: the '{ppt['policy']}' policy needs a score-variance threshold "
                                          f"(a float >= 0)")


def _check_train(cfg: dict[str, Any]) -> None:
    train, aug = cfg["train"], cfg["aug"]
    if train["warmup_epochs"] >= train["epochs"]:
        raise KeyProblem("train.warmup_epochs",
                         f"expected fewer than train.epochs ({train['epochs']}), got {train['warmup_epochs']}")
    if train["amp_level"] != "O0" and train["loss_scale"] == "none":
        raise KeyProblem("train.loss_scale", f"expected 'dynamic' or 'auto' with train.amp_level "
                                             f"{train['amp_level']} (float16 gradients underflow without loss "
                                             f"scaling), got {show(train['loss_scale'])}")
    for key in ("scale", "ratio"):
        lo, hi = aug[key]
        if lo > hi:
            raise KeyProblem(f"aug.{key}", f"expected [lo, hi] with lo <= hi, got {show(aug[key])}")


def _check_distill(cfg: dict[str, Any]) -> None:
    distill = cfg["distill"]
    if distill["teacher"] == SELF_TEACHER and distill["teacher_config"] is not None:
        raise KeyProblem("distill.teacher_config", f"expected null with distill.teacher self (the teacher is this "
                                                   f"config's model), got {show(distill['teacher_config'])}")


# Rules over several keys, run in order after every key passed its own check; load_config adds the file or
# override to the KeyProblem they raise.
SCHEMA = Schema(_TABLE, [_check_model, _check_ppt, _check_train, _check_distill])


def load_config(path: PathLike, overrides: Sequence[str] | None = None) -> dict[str, Any]:
    """Read, override, validate and complete a YAML config: :meth:`src.schema.Schema.load` with :data:`SCHEMA`
    (``overrides`` are ``"section.key=value"`` strings)."""
    return SCHEMA.load(path, overrides)


def configured_spec(cfg: Mapping[str, Any]) -> ViTSpec:
    """The architecture a config describes: ``model.name``'s registered spec with the non-null overrides."""
    model = cfg["model"]
    return model_spec(model["name"]).replace(**{k: model[k] for k in ARCH_OVERRIDES if model[k] is not None})


def ppt_setting(cfg: Mapping[str, Any]) -> PPTSetting | None:
    """The token-reduction setting a config describes, or None when ``ppt.enabled`` is false."""
    ppt = dict(cfg["ppt"])
    return PPTSetting.coerce(ppt) if ppt.pop("enabled") else None


def model_kwargs(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``src.models.create_model`` for a config returned by :func:`load_config`: the
    name, classes, :func:`ppt_setting`, stochastic depth, and the architecture keys that are not null."""
    model = cfg["model"]
    kwargs: dict[str, Any] = {"name": model["name"], "num_classes": model["num_classes"], "ppt": ppt_setting(cfg),
                              "drop_path_rate": model["drop_path_rate"]}
    kwargs.update({k: model[k] for k in ARCH_OVERRIDES if model[k] is not None})
    return kwargs


def save_config(cfg: Mapping[str, Any], path: PathLike) -> None:
    """Write a config (e.g. the resolved one, next to a run's outputs) as YAML, atomically.

    The file loads back with :func:`load_config` to an equal dict.
    """
    text = "# Resolved configuration (src.config.save_config): every key, defaults filled in.\n"
    text += yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=None)
    write_text_atomic(path, text)


def schema_markdown() -> str:
    """The schema as a Markdown table (embedded in config/README.md)."""
    return SCHEMA.markdown()


if __name__ == "__main__":
    print(schema_markdown(), end="")
