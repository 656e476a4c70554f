"""YAML configuration: one declarative schema, strict validation, dotted command-line overrides.

Every script reads one YAML file (``config/*.yaml``) plus ``section.key=value`` overrides through
:func:`load_config`, which returns a plain nested dict with every default filled in, or raises
:class:`ConfigError` (one line naming the file or override, the key, what was expected and what was got)
before any work starts.

The schema is the :data:`SCHEMA` table: section -> key -> :class:`Key` (value check, default, one-line doc);
a :class:`Key` directly under :data:`SCHEMA` is a top-level key (``seed``). To add a section or key, add
rows; rules that relate several keys go in :data:`CROSS_CHECKS`. ``config/README.md`` embeds the table
printed by ``python -m src.config`` (a test keeps them in sync).

YAML is read with PyYAML's safe loader plus two fixes: exponent floats without a dot or an exponent sign (``7e-5``, ``1e9``, ``1.0e9``)
are floats, not strings as in YAML 1.1, and a key repeated in one mapping is an error instead of silently
keeping the last value. Override values are parsed with the same loader.
"""
import copy
import difflib
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml
from .fileio import write_text_atomic

__all__ = [
    "ConfigError", "KeyProblem", "Check", "Key", "REQUIRED", "SCHEMA", "CROSS_CHECKS", "load_config", "model_kwargs",
    "save_config", "schema_markdown", "an_int", "a_float", "a_bool", "a_str", "int_or_int_list",
    "ascending_int_list", "float_list",
]


class ConfigError(ValueError):
    """An invalid configuration; the message is one line: ``<file or override>: <key>: <what is wrong>``."""


class _Invalid(Exception):
    """Raised by a :class:`Check` function; the check's ``text`` says what was expected."""


class KeyProblem(Exception):
    """Raised by a cross check: ``key`` is the dotted key to blame, ``message`` what is wrong with it."""

    def __init__(self, key: str, message: str):
        super().__init__(key, message)
        self.key, self.message = key, message


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()  # default of a key the YAML must set


@dataclass(frozen=True)
class Check:
    """A value check: ``text`` says what is expected ("an int >= 1"), ``fn`` returns the normalised value
    (e.g. an int given for a float becomes a float) or raises ``_Invalid``."""
    text: str
    fn: Callable[[Any], Any]


@dataclass(frozen=True)
class Key:
    """One schema row. ``required_if`` names a bool key of the same section: when that key is false the
    value may be missing or null (it is then null in the result); otherwise the key is required."""
    check: Check
    default: Any
    doc: str
    required_if: Optional[str] = None


# ----------------------------------------------------------------------------------------------- checks

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML true/false must not pass as 1/0


def _range_text(lo: Optional[float], hi: Optional[float], lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def _within(v: float, lo: Optional[float], hi: Optional[float], lo_open: bool, hi_open: bool) -> bool:
    if lo is not None and (v <= lo if lo_open else v < lo):
        return False
    return hi is None or (v < hi if hi_open else v <= hi)


def _as_float(v: Any, lo: Optional[float], hi: Optional[float], lo_open: bool, hi_open: bool) -> float:
    if not (_is_int(v) or isinstance(v, float)) or not math.isfinite(v) or not _within(v, lo, hi, lo_open,
                                                                                       hi_open):
        raise _Invalid
    return float(v)


def an_int(lo: Optional[int] = None, hi: Optional[int] = None, nullable: bool = False) -> Check:
    """An int (not a bool) in ``[lo, hi]``; ``nullable`` also accepts null."""
    def fn(v: Any) -> Optional[int]:
        if v is None and nullable:
            return None
        if not _is_int(v) or not _within(v, lo, hi, False, False):
            raise _Invalid
        return v
    return Check("an int" + _range_text(lo, hi, False, False) + (" or null" if nullable else ""), fn)


def a_float(lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
            hi_open: bool = False) -> Check:
    """A finite float (an int is accepted and converted) in the given range."""
    def fn(v: Any) -> float:
        return _as_float(v, lo, hi, lo_open, hi_open)
    return Check("a float" + _range_text(lo, hi, lo_open, hi_open), fn)


def a_bool() -> Check:
    """true or false (not 0/1)."""
    def fn(v: Any) -> bool:
        if not isinstance(v, bool):
            raise _Invalid
        return v
    return Check("true or false", fn)


def a_str(choices: Optional[Sequence[str]] = None) -> Check:
    """A non-empty string, or one of ``choices``."""
    def fn(v: Any) -> str:
        if not isinstance(v, str) or not v.strip() or (choices is not None and v not in choices):
            raise _Invalid
        return v
    return Check("one of " + ", ".join(f"'{c}'" for c in choices) if choices else "a non-empty string", fn)


def int_or_int_list(lo: int = 0) -> Check:
    """An int >= lo, or a list of them."""
    def fn(v: Any) -> Union[int, List[int]]:
        if _is_int(v) and v >= lo:
            return v
        if isinstance(v, list) and all(_is_int(x) and x >= lo for x in v):
            return list(v)
        raise _Invalid
    return Check(f"an int >= {lo} or a list of them", fn)


def ascending_int_list(lo: int = 0) -> Check:
    """A list of distinct ints >= lo in ascending order (so list-valued companions pair up unambiguously)."""
    def fn(v: Any) -> List[int]:
        if not isinstance(v, list) or not all(_is_int(x) and x >= lo for x in v) or \
                any(a >= b for a, b in zip(v, v[1:])):
            raise _Invalid
        return list(v)
    return Check(f"a list of distinct ints >= {lo} in ascending order", fn)


def float_list(n: int, lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
               hi_open: bool = False) -> Check:
    """A list of exactly ``n`` finite floats in the given range."""
    def fn(v: Any) -> List[float]:
        if not isinstance(v, list) or len(v) != n:
            raise _Invalid
        return [_as_float(x, lo, hi, lo_open, hi_open) for x in v]
    return Check(f"a list of {n} floats" + _range_text(lo, hi, lo_open, hi_open), fn)


# ----------------------------------------------------------------------------------------------- schema

AMP_LEVELS = ("auto", "O0", "O2")
LOSS_SCALES = ("auto", "none", "dynamic")

SCHEMA: Dict[str, Union[Key, Dict[str, Key]]] = {
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
        "drop_path_rate": Key(a_float(0, 1, hi_open=True), 0.0,
                              "stochastic depth rate of the last block (linear from 0); training only"),
    },
    "ppt": {
        "enabled": Key(a_bool(), True, "false = plain DeiT: the other ppt keys are then not used"),
        "r": Key(int_or_int_list(0), REQUIRED,
                 "tokens removed at each PP block, or one value per entry of `layers`; clamped to (N-1)//2",
                 required_if="enabled"),
        "layers": Key(ascending_int_list(0), REQUIRED,
                      "0-based indices of the blocks that prune or pool tokens, each < model depth",
                      required_if="enabled"),
        "threshold": Key(a_float(0), REQUIRED,
                         "score-variance threshold: below it a PP block pools, else prunes; "
                         "0 = prune only, 1e9 = pool only (ToMe-like)",
                         required_if="enabled"),
        "prop_attn": Key(a_bool(), True, "proportional attention: weight attention by pooled token sizes"),
    },
    "data": {
        "path": Key(a_str(), REQUIRED,
                    "dataset root with `train/<class>/...` and `val/<class>/...`, or `demo` (built-in set)"),
        "batch_size": Key(an_int(1), 64, "images per batch (per device)"),
        "num_workers": Key(an_int(1), 2, "parallel workers of the data pipeline"),
        "crop_pct": Key(a_float(0, 1, lo_open=True), 0.875,
                        "evaluation: resize the shorter side to img_size / crop_pct, then centre-crop"),
        "interpolation": Key(a_str(("bicubic", "bilinear")), "bicubic", "resize filter"),
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
}

# The architecture keys of `model` that are passed to create_model only when set.
_ARCH_OVERRIDES = ("img_size", "patch_size", "embed_dim", "depth", "num_heads", "drop_path_rate")


def _registry_arch(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The model's architecture: registry defaults with the config's non-null overrides."""
    from .models import list_models, model_defaults  # imported late: it loads MindSpore

    name = cfg["model"]["name"]
    names = list_models()
    if name not in names:
        raise KeyProblem("model.name", f"expected one of {', '.join(names)}, got {_show(name)}{_hint(name, names)}")
    arch = model_defaults(name)
    arch.update({k: cfg["model"][k] for k in _ARCH_OVERRIDES if cfg["model"][k] is not None})
    return arch


def _check_model(cfg: Dict[str, Any]) -> None:
    model, arch = cfg["model"], _registry_arch(cfg)
    if arch["img_size"] % arch["patch_size"]:
        if model["img_size"] is not None:
            raise KeyProblem("model.img_size",
                           f"expected a multiple of the patch size {arch['patch_size']}, got {arch['img_size']}")
        raise KeyProblem("model.patch_size",
                       f"expected a divisor of the image size {arch['img_size']}, got {arch['patch_size']}")
    if arch["embed_dim"] % arch["num_heads"]:
        if model["embed_dim"] is not None:
            raise KeyProblem("model.embed_dim",
                           f"expected a multiple of num_heads {arch['num_heads']}, got {arch['embed_dim']}")
        raise KeyProblem("model.num_heads",
                       f"expected a divisor of embed_dim {arch['embed_dim']}, got {arch['num_heads']}")


def _check_ppt(cfg: Dict[str, Any]) -> None:
    ppt = cfg["ppt"]
    if not ppt["enabled"]:
        return
    depth = _registry_arch(cfg)["depth"]
    if any(i >= depth for i in ppt["layers"]):
        raise KeyProblem("ppt.layers", f"expected block indices in [0, {depth}) (the model has {depth} blocks), "
                                     f"got {_show(ppt['layers'])}")
    if isinstance(ppt["r"], list) and len(ppt["r"]) != len(ppt["layers"]):
        raise KeyProblem("ppt.r", f"expected an int or one value per entry of ppt.layers "
                                f"({len(ppt['layers'])} values), got {_show(ppt['r'])}")


def _check_train(cfg: Dict[str, Any]) -> None:
    train, aug = cfg["train"], cfg["aug"]
    if train["warmup_epochs"] >= train["epochs"]:
        raise KeyProblem("train.warmup_epochs",
                         f"expected fewer than train.epochs ({train['epochs']}), got {train['warmup_epochs']}")
    if train["amp_level"] != "O0" and train["loss_scale"] == "none":
        raise KeyProblem("train.loss_scale", f"expected 'dynamic' or 'auto' with train.amp_level "
                                             f"{train['amp_level']} (float16 gradients underflow without loss "
                                             f"scaling), got {_show(train['loss_scale'])}")
    for key in ("scale", "ratio"):
        lo, hi = aug[key]
        if lo > hi:
            raise KeyProblem(f"aug.{key}", f"expected [lo, hi] with lo <= hi, got {_show(aug[key])}")


# Rules over several keys, run in order after every key passed its own check. Each takes the filled-in
# config and raises KeyProblem(dotted key to blame, message); load_config adds the file or override.
CROSS_CHECKS: List[Callable[[Dict[str, Any]], None]] = [_check_model, _check_ppt, _check_train]


# ------------------------------------------------------------------------------------------------- YAML

class _Loader(yaml.SafeLoader):
    """Safe loader with YAML 1.2 exponent floats and duplicate-key errors (see the module docstring)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if (key_node.tag, key_node.value) in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key_node.value}'",
                                                            key_node.start_mark)
                seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
                              list("-+.0123456789"))


def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"invalid YAML{where}: {problem}".split())  # one line


def _show(v: Any) -> str:
    """A value as the user wrote it in YAML (true, null, "text", [1, 2])."""
    return json.dumps(v, default=str)


def _hint(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ---------------------------------------------------------------------------------------------- loading

def _rows() -> List[Tuple[str, Key]]:
    """Every schema key as (dotted name, Key), in schema order."""
    rows = []
    for name, entry in SCHEMA.items():
        if isinstance(entry, Key):
            rows.append((name, entry))
        else:
            rows.extend((f"{name}.{key}", row) for key, row in entry.items())
    return rows


def _unknown(name: str, section: Optional[str]) -> str:
    if section is None:
        known = list(SCHEMA)
        return f"unknown section or key{_hint(name, known)}; known: {', '.join(known)}"
    known = list(SCHEMA[section])
    return f"unknown key{_hint(name, known)}; known {section} keys: {', '.join(known)}"


def _read_file(path: str) -> Dict[str, Any]:
    """The raw values of the file, by dotted key (structure checked, values not yet)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
    try:
        doc = _parse_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: {_yaml_error(exc)}") from None
    if not isinstance(doc, dict):
        got = "an empty document" if doc is None else _show(doc)
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {got}")
    raw = {}
    for name, value in doc.items():
        name = str(name)
        entry = SCHEMA.get(name)
        if entry is None:
            raise ConfigError(f"{path}: {name}: {_unknown(name, None)}")
        if isinstance(entry, Key):
            raw[name] = value
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {name}: expected a mapping of {name} keys, got {_show(value)}")
        for key, v in value.items():
            key = str(key)
            if key not in entry:
                raise ConfigError(f"{path}: {name}.{key}: {_unknown(key, name)}")
            raw[f"{name}.{key}"] = v
    return raw


def _parse_override(text: str) -> Tuple[str, Any]:
    """``"section.key=value"`` -> (dotted key, YAML-parsed value)."""
    where = f"override '{text}'"
    dotted, sep, value = text.partition("=")
    dotted = dotted.strip()
    if not sep or not dotted:
        raise ConfigError(f"{where}: expected 'section.key=value', e.g. 'ppt.r=[30,60,90]'")
    parts = dotted.split(".")
    entry = SCHEMA.get(parts[0])
    if entry is None:
        raise ConfigError(f"{where}: {parts[0]}: {_unknown(parts[0], None)}")
    if isinstance(entry, Key) and len(parts) > 1:
        raise ConfigError(f"{where}: {parts[0]} is a top-level key, not a section; write '{parts[0]}=value'")
    if isinstance(entry, dict):
        if len(parts) != 2:
            raise ConfigError(f"{where}: expected exactly one key under '{parts[0]}', e.g. "
                              f"'{parts[0]}.{next(iter(entry))}=value'")
        if parts[1] not in entry:
            raise ConfigError(f"{where}: {dotted}: {_unknown(parts[1], parts[0])}")
    try:
        return dotted, _parse_yaml(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: {dotted}: value is {_yaml_error(exc)}") from None


def load_config(path: Union[str, "os.PathLike[str]"], overrides: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Read, override, validate and complete a YAML config.

    Args:
        path: the YAML file.
        overrides: ``"section.key=value"`` strings (``"seed=3"`` for a top-level key), applied in order
            after the file; the value is YAML (``ppt.r=[30,60,90]``, ``ppt.enabled=false``).

    Returns:
        A plain nested dict (``{"seed": ..., "model": {...}, "ppt": {...}, "data": {...}}``) holding every
        schema key, defaults filled in, ints given for floats converted to floats.

    Raises:
        ConfigError: one line naming the file or override, the key, what was expected and what was got.
    """
    path = os.fspath(path)
    raw = _read_file(path)
    origin = dict.fromkeys(raw, path)
    for text in overrides or ():
        dotted, value = _parse_override(text)
        raw[dotted], origin[dotted] = value, f"override '{text}'"

    flat = {}
    for dotted, key in _rows():
        section = dotted.rpartition(".")[0]
        if key.required_if is not None:
            switch = f"{section}.{key.required_if}"
            optional = flat[switch] is False  # the switch key comes earlier in its section
        else:
            optional = False
        if dotted not in raw:
            if key.default is REQUIRED and not optional:
                condition = f" (as {switch} is true)" if key.required_if else ""
                raise ConfigError(f"{path}: {dotted}: missing required key{condition}; expected {key.check.text}")
            # a copy, so a caller editing its config never edits the schema's list defaults
            flat[dotted] = None if key.default is REQUIRED else copy.deepcopy(key.default)
            continue
        if raw[dotted] is None and optional:
            flat[dotted] = None
            continue
        try:
            flat[dotted] = key.check.fn(raw[dotted])
        except _Invalid:
            raise ConfigError(f"{origin[dotted]}: {dotted}: expected {key.check.text}, "
                              f"got {_show(raw[dotted])}") from None

    cfg: Dict[str, Any] = {}
    for dotted, value in flat.items():
        section, _, key = dotted.rpartition(".")
        if section:
            cfg.setdefault(section, {})[key] = value
        else:
            cfg[key] = value
    for check in CROSS_CHECKS:
        try:
            check(cfg)
        except KeyProblem as exc:
            raise ConfigError(f"{origin.get(exc.key, path)}: {exc.key}: {exc.message}") from None
    return cfg


def model_kwargs(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """Keyword arguments of ``src.models.create_model`` for a config returned by :func:`load_config`.

    ``ppt`` is None when ``ppt.enabled`` is false; the architecture keys are passed only when not null.
    """
    model, ppt = cfg["model"], cfg["ppt"]
    kwargs: Dict[str, Any] = {"name": model["name"], "num_classes": model["num_classes"], "ppt": None}
    if ppt["enabled"]:
        r = ppt["r"]
        kwargs["ppt"] = {"r": list(r) if isinstance(r, list) else r, "layers": list(ppt["layers"]),
                         "threshold": ppt["threshold"], "prop_attn": ppt["prop_attn"]}
    kwargs.update({k: model[k] for k in _ARCH_OVERRIDES if model[k] is not None})
    return kwargs


def save_config(cfg: Mapping[str, Any], path: Union[str, "os.PathLike[str]"]) -> None:
    """Write a config (e.g. the resolved one, next to a run's outputs) as YAML, atomically.

    The file loads back with :func:`load_config` to an equal dict.
    """
    text = "# Resolved configuration (src.config.save_config): every key, defaults filled in.\n"
    text += yaml.safe_dump(dict(cfg), sort_keys=False, default_flow_style=None)
    write_text_atomic(path, text)


def schema_markdown() -> str:
    """The schema as a Markdown table (embedded in config/README.md)."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for dotted, key in _rows():
        if key.default is REQUIRED:
            default = f"required if {dotted.rpartition('.')[0]}.{key.required_if}" if key.required_if \
                else "required"
        else:
            default = f"`{_show(key.default)}`"
        lines.append(f"| `{dotted}` | {key.check.text} | {default} | {key.doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(schema_markdown(), end="")
