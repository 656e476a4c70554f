"""Training checkpoints: what a run writes after every epoch, and resuming from it.

Per epoch ``N`` the output folder receives (each file written to a temporary name, then renamed):

* ``epoch_N.state.ckpt``: the whole training state -- model weights, AdamW moments and step, EMA weights,
  loss-scale state -- plus ``meta.train_state``, a JSON string with the epoch, global step, best top-1 so
  far, the seed, the resolved config, the class names (the training split's sorted class folders) and,
  when distilling, what identifies the teacher (not its weights). Resuming reads this file.
* ``epoch_N.ckpt``: the model weights alone (``src.io.checkpoint.save_weights``) with the class names:
  ``eval.py --ckpt`` reads it.
* ``epoch_N.ema.ckpt``: the EMA weights under the model's own names (when ``train.ema`` is on).
* ``best.ckpt`` / ``best_ema.ckpt``: copies of the weights with the best validation top-1 so far.

The newest ``train.keep_checkpoints`` epochs are kept. The state file is written before the weight files, so
the newest state file is always complete and consistent; a run killed at any moment resumes from it and
loses at most the unfinished epoch.
"""
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mindspore as ms
from mindspore import nn

from ..config import SCHEMA
from ..io.class_names import CLASS_NAMES_KEY, describe_difference
from ..io.fileio import PathLike, atomic_path
from ..mslog import first_line
from .distill import TEACHER_PREFIX

__all__ = ["STATE_FORMAT", "STATE_SUFFIX", "ResumeError", "state_path", "weights_path", "ema_weights_path",
           "save_training_state", "load_training_state", "find_resume_file", "epoch_files",
           "prune_checkpoints", "RESUME_KEYS", "TEACHER_KEY", "read_state_meta"]

STATE_FORMAT = "ppt-mindspore-train-state-v1"
STATE_SUFFIX = ".state.ckpt"
META_KEY = "meta.train_state"
# Config entries that must be equal to resume: they define the model, the schedule and the data order.
RESUME_KEYS = ("seed", "model", "ppt", "train", "aug", "data.batch_size", "data.mean", "data.std",
               "data.interpolation", "data.repeated_aug", "distill.type", "distill.alpha", "distill.tau")
# The state's record of the distillation teacher (src.train.distill.teacher_record); the teacher's weights
# themselves are not in the state (the teacher is rebuilt from them, and its hash compared).
TEACHER_KEY = "teacher"
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.state\.ckpt$")



class ResumeError(ValueError):
    """A resume file that cannot be used (corrupt, not a training state, other model or config)."""


def state_path(folder: PathLike, epoch: int) -> Path:
    return Path(folder) / f"epoch_{epoch:04d}{STATE_SUFFIX}"


def weights_path(folder: PathLike, epoch: int) -> Path:
    return Path(folder) / f"epoch_{epoch:04d}.ckpt"


def ema_weights_path(folder: PathLike, epoch: int) -> Path:
    return Path(folder) / f"epoch_{epoch:04d}.ema.ckpt"


def _atomic_save(entries: list[dict[str, Any]], path: Path, append: dict[str, Any] | None = None) -> None:
    with atomic_path(path, suffix=".tmp.ckpt") as tmp:
        ms.save_checkpoint(entries, tmp, append_dict=append, crc_check=True)


def _state_parameters(train_step: nn.Cell, model: nn.Cell) -> dict[str, ms.Parameter]:
    """Every parameter of the train step except the learning-rate table (rebuilt from the config) and the
    distillation teacher's (rebuilt from its weights file).

    The model's parameters go under their plain names (as in weight files): wrapping the model in another
    cell (e.g. ``PPTStats``) may prefix their ``Parameter.name``. The others (``adam_m.*``, ``adam_v.*``,
    ``ema.*``, ``global_step``, loss-scale state) keep the names given when they were created.
    """
    params = dict(model.parameters_and_names())
    own = {id(p) for p in params.values()}
    for p in train_step.get_parameters():
        if id(p) in own or p.name == "learning_rate" or p.name.startswith(TEACHER_PREFIX):
            continue
        if p.name in params:
            raise ValueError(f"training state: two parameters are named '{p.name}'")
        params[p.name] = p
    return params


def save_training_state(train_step: nn.Cell, model: nn.Cell, path: PathLike, meta: Mapping[str, Any]) -> None:
    """Write all parameters of ``train_step`` (``model``, optimiser, EMA, loss scale) and ``meta`` (JSON-able;
    must hold ``epoch``, ``global_step``, ``config`` and ``world_size``) to ``path`` atomically."""
    record = dict(meta, format=STATE_FORMAT)
    entries = [{"name": name, "data": p} for name, p in _state_parameters(train_step, model).items()]
    _atomic_save(entries, Path(path), {META_KEY: json.dumps(record)})


def _config_value(cfg: Mapping[str, Any], dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = value[part]
    return value


def _first_difference(a: Any, b: Any, prefix: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            diff = _first_difference(a.get(key), b.get(key), f"{prefix}.{key}")
            if diff:
                return diff
        return None
    if a != b:
        return f"{prefix}: the file has {json.dumps(a)}, this run has {json.dumps(b)}"
    return None


def _read_state(path: Path, meta_only: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """(tensors, meta) of a training state file, or ResumeError."""
    where = f"training state {path}"
    if not path.is_file():
        raise ResumeError(f"{where}: no such file")
    only_meta = {"choice_func": _is_meta_key} if meta_only else {}
    try:
        loaded = ms.load_checkpoint(str(path), crc_check=True, **only_meta)
    # Broad on purpose: a damaged file surfaces as RuntimeError/ValueError/protobuf errors depending on
    # where the damage is; all of them mean the same thing to the user.
    except Exception as exc:  # pylint: disable=broad-except
        raise ResumeError(f"{where}: not a readable MindSpore checkpoint ({first_line(exc)})") from None
    raw = loaded.pop(META_KEY, None)
    try:
        meta = json.loads(raw if isinstance(raw, str) else "")
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise ResumeError(f"{where}: not a training state written by train.py (a weights-only file such as "
                          f"epoch_N.ckpt is a starting point for a new run, not a state to resume)")
    return loaded, meta


def _is_meta_key(name: str) -> bool:
    return name == META_KEY


def read_state_meta(path: PathLike) -> dict[str, Any]:
    """The ``meta.train_state`` record of a training state file (its tensors are not read)."""
    return _read_state(Path(path), meta_only=True)[1]


def _teacher_difference(stored: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> str | None:
    """How the teacher recorded in a state differs from this run's (None: the same)."""
    if stored is None or current is None:
        if stored is current:
            return None
        return f"the file's run had {'no' if stored is None else 'a'} teacher, this run has " \
               f"{'none' if current is None else 'one'}"
    for section in ("model", "ppt"):
        diff = _first_difference(stored[section], current[section], f"teacher {section}")
        if diff:
            return diff
    if stored["weights_sha256"] != current["weights_sha256"]:
        return (f"the teacher's weights differ: sha256 {stored['weights_sha256'][:12]} (the file's, from "
                f"{stored['weights_file']}) vs {current['weights_sha256'][:12]} (this run's, from "
                f"{current['weights_file']})")
    return None


def _check_meta(meta: Mapping[str, Any], where: str, cfg: Mapping[str, Any], world_size: int,
                class_names: Sequence[str] | None, teacher: Mapping[str, Any] | None) -> None:
    """Refuse a state written by another run than this one (see :func:`load_training_state`)."""
    # A state written before distillation existed trained without it.
    stored_cfg = {"distill": {k: row.default for k, row in SCHEMA["distill"].items()}, **meta["config"]}
    for key in RESUME_KEYS:
        diff = _first_difference(_config_value(stored_cfg, key), _config_value(cfg, key), key)
        if diff:
            raise ResumeError(f"{where}: written with another config: {diff}")
    if meta["world_size"] != world_size:
        raise ResumeError(f"{where}: written by a run on {meta['world_size']} device(s), this run has "
                          f"{world_size} (the global batch and the learning rate would change)")
    stored = meta.get(CLASS_NAMES_KEY)
    if class_names is not None and stored is not None and list(stored) != list(class_names):
        raise ResumeError(f"{where}: written for other class folders ({describe_difference(stored, class_names)}: "
                          f"the file's vs this run's); the labels would change meaning")
    diff = _teacher_difference(meta.get(TEACHER_KEY), teacher)
    if diff:
        raise ResumeError(f"{where}: written with another teacher: {diff}")


def load_training_state(train_step: nn.Cell, model: nn.Cell, path: PathLike, cfg: Mapping[str, Any],
                        world_size: int, class_names: Sequence[str] | None = None,
                        teacher: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Restore ``train_step`` (whose network is ``model``) from a :func:`save_training_state` file; return its meta.

    ``teacher`` is this run's distillation teacher record (``src.train.distill.teacher_record``) or None; the
    state must have been written with the same one (its weights are not in the state, only their hash).

    Raises:
        ResumeError: the file is unreadable or corrupt, is not a training state, was written for another
            config (any of :data:`RESUME_KEYS`), number of devices, other ``class_names`` than it stores (the
            labels would change meaning; a state written before names were stored is not checked) or another
            teacher, or its tensors do not match the model.
    """
    path = Path(path)
    where = f"training state {path}"
    loaded, meta = _read_state(path)
    _check_meta(meta, where, cfg, world_size, class_names, teacher)
    params = _state_parameters(train_step, model)
    missing = sorted(set(params) - set(loaded))
    unexpected = sorted(set(loaded) - set(params))
    if missing or unexpected:
        raise ResumeError(f"{where}: tensors do not match this run: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}")
    for name, p in params.items():
        value = loaded[name]
        if tuple(value.shape) != tuple(p.shape):
            raise ResumeError(f"{where}: {name} has shape {tuple(value.shape)}, this run needs {tuple(p.shape)}")
        p.set_data(value.astype(p.dtype))
    return meta


def epoch_files(folder: PathLike) -> dict[int, Path]:
    """``{epoch: state file}`` of the training states in ``folder``."""
    found = {}
    for entry in Path(folder).iterdir() if Path(folder).is_dir() else ():
        match = _EPOCH_FILE.match(entry.name)
        if match:
            found[int(match.group(1))] = entry
    return found


def find_resume_file(target: PathLike) -> Path:
    """The state file a resume target means: a ``*.state.ckpt`` file, a weights file ``X.ckpt`` next to its
    ``X.state.ckpt``, or an output folder (its newest epoch)."""
    target = Path(target)
    if target.is_dir():
        found = epoch_files(target)
        if not found:
            raise ResumeError(f"{target}: the folder has no epoch_N{STATE_SUFFIX} training state")
        return found[max(found)]
    if target.name.endswith(STATE_SUFFIX):
        if not target.is_file():
            raise ResumeError(f"{target}: no such training state file")
        return target
    if target.suffix == ".ckpt":
        sibling = target.with_name(target.name[:-len(".ckpt")] + STATE_SUFFIX)
        if sibling.is_file():
            return sibling
        raise ResumeError(f"{target}: no training state {sibling.name} next to it (a weights-only file is a "
                          f"starting point for a new run, not a state to resume)")
    if not target.exists():
        raise ResumeError(f"{target}: no such training state file or output folder")
    raise ResumeError(f"{target}: expected an output folder or a *{STATE_SUFFIX} training state")


def prune_checkpoints(folder: PathLike, keep: int) -> list[Path]:
    """Delete the epoch files (state, weights, EMA weights) of all but the newest ``keep`` epochs."""
    removed = []
    epochs = sorted(epoch_files(folder))
    for epoch in epochs[:-keep] if keep > 0 else epochs:
        # The state file last: an interrupted prune leaves no weight file without its state.
        for path in (weights_path(folder, epoch), ema_weights_path(folder, epoch), state_path(folder, epoch)):
            if path.exists():
                path.unlink()
                removed.append(path)
    return removed
