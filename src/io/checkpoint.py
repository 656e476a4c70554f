"""Checkpoint I/O: read DeiT / ViT weights from PyTorch / timm / MindSpore / mindcv files and load them strictly.

Supported inputs (chosen by file extension):

* ``.safetensors`` (timm): read with ``safetensors.numpy``; bfloat16 is widened by bit manipulation.
* ``.pth`` / ``.pt`` / ``.bin`` (PyTorch zip format, e.g. the DeiT release files): read **without torch** by the
  restricted unpickler of :mod:`src.io.torch_pickle`, so a malicious file cannot run code.
* ``.ckpt`` (MindSpore): ``mindspore.load_checkpoint``; entries named ``meta.*`` are metadata, not weights.
  :func:`save_weights` appends a CRC32 (``crc_check=True``), verified on every read; a file without one (written
  elsewhere) is read unchecked. Metadata entries are scalars; the class names (key
  :data:`src.io.class_names.CLASS_NAMES_KEY`) are one JSON string entry, decoded by :func:`read_checkpoint_meta`.

Floating tensors are returned as float32 numpy arrays; integer / bool tensors keep their dtype (DeiT has none,
so strict loading reports them as unexpected entries).
"""
import binascii
import math
import os
import re
from collections.abc import Callable
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import nn
from safetensors import SafetensorError, deserialize, safe_open

from ..models import create_model, list_families, list_models, model_family, model_spec
from ..mslog import held_mindspore_logs
from .class_names import (
    CLASS_NAMES_KEY,
    IMAGENET_NUM_CLASSES,
    check_class_names,
    imagenet_class_names,
    load_class_names,
    names_from_json,
    names_to_json,
)
from .fileio import PathLike, atomic_path
from .torch_pickle import UnsafePickleError, bf16_to_f32, quoted, read_torch_zip

__all__ = [
    "CheckpointMismatchError", "UnsafePickleError", "read_state_dict", "load_state_dict", "load_weights",
    "save_weights", "read_checkpoint_meta", "read_class_names", "infer_model_args", "convert_checkpoint",
    "check_family_options",
]

MetaValue = int | float | str | bool | list[str]  # a list only for the class names

TORCH_EXTS = (".pth", ".pt", ".bin")
META_PREFIX = "meta."
_HEAD_PREFIXES = ("head.", "head_dist.")
_INT64_RANGE = (-(2 ** 63), 2 ** 63 - 1)
_CRC_TAG = b"crc_num"  # save_checkpoint(crc_check=True) appends it and the CRC32 as 10 big-endian bytes
_CRC_TAIL = len(_CRC_TAG) + 10
_SHOWN = 3  # entries listed per kind in a mismatch message


class CheckpointMismatchError(ValueError):
    """The file's entries do not match the model's parameters one to one (names, shapes or dtypes)."""


# ----------------------------------------------------------------------------------------------- readers

def _as_weight(arr: np.ndarray) -> np.ndarray:
    """float16/float64 -> float32; other dtypes are kept."""
    return arr.astype(np.float32, copy=False) if np.issubdtype(arr.dtype, np.floating) else arr


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    name = None
    try:
        with safe_open(path, framework="np") as f:
            names = list(f.keys())
            dtypes = {name: f.get_slice(name).get_dtype() for name in names}
            state = {}
            for name in names:
                if dtypes[name] != "BF16":
                    state[name] = _as_weight(f.get_tensor(name))
        if len(state) < len(names):
            # safetensors.numpy cannot build bfloat16 arrays (numpy has no such dtype): take the raw bytes.
            with open(path, "rb") as fh:
                raw = dict(deserialize(fh.read()))
            for name in names:
                if dtypes[name] == "BF16":
                    bits = np.frombuffer(bytes(raw[name]["data"]), dtype="<u2").reshape(raw[name]["shape"])
                    state[name] = bf16_to_f32(bits)
    except SafetensorError as e:
        raise ValueError(f"{path}: not a valid safetensors file ({e})") from e
    # e.g. numpy's "array is too big" for a shape like [0, 2**62], which safetensors accepts (0 bytes of data)
    except (ValueError, OverflowError, MemoryError) as e:
        raise ValueError(f"{path}: tensor {quoted(str(name))} cannot be built ({type(e).__name__}: "
                         f"{str(e)[:120]})") from e
    return {name: state[name] for name in names}


def _is_meta(name: str) -> bool:
    return name.startswith(META_PREFIX)


def _stored_crc(path: str) -> int | None:
    """The CRC32 that ``save_checkpoint(crc_check=True)`` appends, or None for a file without one (written
    elsewhere: read unchecked); refuses an empty file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(max(size - _CRC_TAIL, 0))
        tail = f.read()
    has_crc = size >= _CRC_TAIL and tail.startswith(_CRC_TAG)
    if size - (_CRC_TAIL if has_crc else 0) == 0:
        raise ValueError(f"{path}: the checkpoint is empty ({size} bytes): it holds no tensors")
    return int.from_bytes(tail[len(_CRC_TAG):], "big") if has_crc else None


def _crc_matches(path: str, stored: int) -> bool:
    left, crc = os.path.getsize(path) - _CRC_TAIL, 0
    with open(path, "rb") as f:
        while left > 0 and (chunk := f.read(min(left, 16 << 20))):
            crc, left = binascii.crc32(chunk, crc), left - len(chunk)
    return crc == stored


def _meta_choice() -> Callable[[str], bool]:
    """A ``choice_func`` keeping the ``meta.*`` entries and the first other one: MindSpore refuses a selection
    that comes out empty, as it would for a file without metadata."""
    other: list[str] = []

    def choose(name: str) -> bool:
        if _is_meta(name):
            return True
        if not other:
            other.append(name)
            return True
        return False
    return choose


def _load_ckpt(path: str, meta_only: bool = False) -> dict[str, Any]:
    stored = _stored_crc(path)
    try:
        # MindSpore checks the CRC while it reads the file (one pass); its [ERROR] lines on a damaged or
        # unparsable file would bury our one line, and its message on a CRC mismatch blames permissions.
        with held_mindspore_logs():
            return ms.load_checkpoint(path, choice_func=_meta_choice() if meta_only else None,
                                      crc_check=stored is not None)
    except (ValueError, RuntimeError, TypeError) as e:
        if stored is not None and not _crc_matches(path, stored):
            raise ValueError(f"{path}: the file is damaged: its CRC32 checksum does not match its contents") from e
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path}: not a readable MindSpore checkpoint ({reason})") from e


def _read_ckpt(path: str) -> dict[str, np.ndarray]:
    state = {}
    for name, value in _load_ckpt(path).items():
        if _is_meta(name):
            continue
        if isinstance(value, str):
            raise ValueError(f"{path}: entry '{name}' is a string, expected a tensor "
                             f"(metadata must be named '{META_PREFIX}*')")
        # Copy: asnumpy() may share memory with the temporary Parameter.
        state[name] = _as_weight(np.array(value.asnumpy()))
    return state


def _check_exists(path: PathLike) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    return path


def _model_names(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A release file's entries under the model's names: each family renames its own (``release_renames``)."""
    for family in list_families():
        state = family.rename_release_entries(state)
    return state


def read_state_dict(path: PathLike) -> dict[str, np.ndarray]:
    """Read the weights of a ``.safetensors``, PyTorch (``.pth``/``.pt``/``.bin``) or MindSpore ``.ckpt`` file.

    Returns ``{name: array}`` in the file's order, floating tensors as float32, with the models' names (the
    families' release names are renamed, e.g. DeiT III's ``blocks.N.gamma_1`` to ``blocks.N.ls1.gamma``). No torch is
    needed and no pickle code is run. Raises FileNotFoundError for a missing file and ValueError for anything
    unreadable.
    """
    path = _check_exists(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        return _read_safetensors(path)
    if ext in TORCH_EXTS:
        return _model_names(read_torch_zip(path))
    if ext == ".ckpt":
        return _read_ckpt(path)
    raise ValueError(f"{path}: unsupported checkpoint extension '{ext}', expected .safetensors, "
                     f"{', '.join(TORCH_EXTS)} or .ckpt")


# ----------------------------------------------------------------------------------------------- loading

def _is_head(name: str) -> bool:
    return name.startswith(_HEAD_PREFIXES)


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ",".join(map(str, shape)) + ")"


def load_state_dict(model: nn.Cell, state: dict[str, np.ndarray], drop_head: bool = False,
                    source: str = "state dict") -> None:
    """Strictly copy ``state`` into ``model``'s parameters (names from ``model.parameters_and_names()``).

    Missing, unexpected, wrong-shaped or non-floating entries raise one CheckpointMismatchError counting each
    kind and naming the first few; nothing is assigned unless everything matches. ``drop_head=True`` ignores
    ``head.*``/``head_dist.*`` in ``state`` and keeps the model's own heads (fine-tuning to another class count).
    """
    check_family_options(state, source)
    params = {name: param for name, param in model.parameters_and_names()
              if not (drop_head and _is_head(name))}
    if drop_head:
        state = {name: value for name, value in state.items() if not _is_head(name)}
    missing = [f"{n} {_fmt_shape(tuple(p.shape))}" for n, p in params.items() if n not in state]
    unexpected = [f"{quoted(n)[1:-1]} {_fmt_shape(v.shape)}" for n, v in state.items() if n not in params]
    wrong = []
    for name, value in state.items():
        if name not in params:
            continue
        want = tuple(params[name].shape)
        if value.shape != want:
            wrong.append(f"{name} file {_fmt_shape(value.shape)} vs model {_fmt_shape(want)}")
        elif not np.issubdtype(value.dtype, np.floating):
            wrong.append(f"{name} file dtype {value.dtype} vs model {params[name].dtype}")
    if missing or unexpected or wrong:
        parts = [f"{label} {len(items)}: [{'; '.join(items[:_SHOWN])}{'; ...' if len(items) > _SHOWN else ''}]"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("mismatched", wrong))
                 if items]
        raise CheckpointMismatchError(f"{source} does not match the model: {' | '.join(parts)}")
    for name, param in params.items():
        param.set_data(ms.Tensor(state[name], dtype=param.dtype))


def load_weights(model: nn.Cell, path: PathLike, drop_head: bool = False) -> None:
    """Read ``path`` (any supported format) and load it strictly into ``model``; see :func:`load_state_dict`."""
    load_state_dict(model, read_state_dict(path), drop_head=drop_head, source=os.fspath(path))


# ----------------------------------------------------------------------------------------------- saving

def _meta_entry(key: Any, value: Any) -> Any:
    """A metadata value as ``mindspore.save_checkpoint`` stores it losslessly (floats as float64 tensors)."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"save_weights: metadata key {key!r} must be a non-empty string")
    if key == CLASS_NAMES_KEY:
        return names_to_json(value, f"save_weights: metadata '{key}'")
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if not _INT64_RANGE[0] <= value <= _INT64_RANGE[1]:
            raise ValueError(f"save_weights: metadata '{key}'={value} does not fit in int64")
        return value
    if isinstance(value, float):
        return ms.Tensor(np.float64(value))
    raise ValueError(f"save_weights: metadata '{key}' is a {type(value).__name__}, expected int, float, str or bool "
                     f"(a list only for '{CLASS_NAMES_KEY}')")


def save_weights(model: nn.Cell, path: PathLike, meta: dict[str, MetaValue] | None = None) -> None:
    """Write ``model``'s parameters to a MindSpore ``.ckpt`` atomically, with ``meta`` under ``meta.<key>``.

    The file appears complete or not at all: it is written to a temporary name in the same folder and then
    moved into place with ``os.replace``. It carries a CRC32, so later damage is refused on reading.
    ``meta["class_names"]`` (:data:`~src.io.class_names.CLASS_NAMES_KEY`) is a list with one name per class of the
    model, stored as one JSON string.
    """
    path = os.fspath(path)
    if not path.endswith(".ckpt"):
        raise ValueError(f"save_weights: {path}: the file name must end with .ckpt")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"save_weights: {path}: folder {folder} does not exist")
    append = {META_PREFIX + key: _meta_entry(key, value) for key, value in (meta or {}).items()}
    names, num_classes = (meta or {}).get(CLASS_NAMES_KEY), getattr(model, "num_classes", None)
    if names is not None and num_classes is not None and len(names) != num_classes:
        raise ValueError(f"save_weights: {path}: {len(names)} class names, but the model has {num_classes} classes")
    entries = [{"name": name, "data": param} for name, param in model.parameters_and_names()]
    with atomic_path(path, suffix=".tmp.ckpt") as tmp:
        ms.save_checkpoint(entries, tmp, append_dict=append, crc_check=True)


def read_checkpoint_meta(path: PathLike) -> dict[str, MetaValue]:
    """The ``meta.*`` entries of a ``.ckpt`` written by :func:`save_weights`, without the prefix; the class
    names decoded to a list (checked: a malformed list is a one-line ValueError naming the file)."""
    path = _check_exists(path)
    if not path.endswith(".ckpt"):
        raise ValueError(f"{path}: metadata is only stored in MindSpore .ckpt files")
    meta = {}
    for name, value in _load_ckpt(path, meta_only=True).items():
        if not _is_meta(name):
            continue
        meta[name[len(META_PREFIX):]] = value if isinstance(value, str) else value.asnumpy().item()
    if CLASS_NAMES_KEY in meta:
        meta[CLASS_NAMES_KEY] = names_from_json(meta[CLASS_NAMES_KEY], f"{path}: metadata '{CLASS_NAMES_KEY}'")
    return meta


def read_class_names(path: PathLike) -> list[str] | None:
    """The class names stored in a weights file, or None: a ``.ckpt`` written before names were stored, and
    PyTorch and safetensors files, store none."""
    if not os.fspath(path).endswith(".ckpt"):
        return None
    return read_checkpoint_meta(path).get(CLASS_NAMES_KEY)


# ----------------------------------------------------------------------------------------------- families

def check_family_options(state: dict[str, np.ndarray], source: str = "state dict") -> None:
    """Refuse, in one line, weights of a family (one whose parameter names ``state`` carries) built with an option
    its model class does not implement (e.g. mindcv's ``global_pool='avg'``: ``ModelFamily.check_state``)."""
    for family in list_families():
        if family.recognizes(state):
            family.check_state(state, source)


# ----------------------------------------------------------------------------------------------- conversion

def _seen_shapes(state: dict[str, np.ndarray]) -> str:
    """The entries an architecture is inferred from, as the file has them (for an error message)."""
    names = ("patch_embed.proj.weight", "pos_embed", "blocks.0.mlp.fc1.weight", "head.weight")
    shown = [f"{name} {_fmt_shape(state[name].shape)}" for name in names if name in state]
    return f"{len(state)} entries; " + (", ".join(shown) if shown else f"first: {', '.join(list(state)[:_SHOWN])}")


def _entry(state: dict[str, np.ndarray], name: str, ndim: int, source: str) -> np.ndarray:
    if name not in state or state[name].ndim != ndim:
        what = "no" if name not in state else f"a {state[name].ndim}-dim"
        raise ValueError(f"{source}: cannot infer the architecture: {what} '{name}' entry ({ndim} dims expected); "
                         f"it holds {_seen_shapes(state)} (name the model explicitly)")
    return state[name]


def _pick_candidate(best: list[str], overrides: dict[str, dict[str, Any]], source: str) -> str:
    """One of the equally good registered models: within one family the first; across families (timm's ViT-S
    and DeiT-S have the same shapes but not the same data settings) the one the file is named after, else an
    error naming them."""
    if len({model_family(name) for name in best}) == 1:  # one family: the same numerics and data settings
        return best[0]
    named = [name for name in best if name in os.path.basename(source)]
    if len(named) == 1:
        return named[0]
    arch = overrides[best[0]]
    details = f" with {', '.join(f'{k}={v}' for k, v in arch.items())}" if arch else ""
    raise ValueError(f"{source}: the shapes fit {len(best)} registered models with the same architecture"
                     f"{details} but their own data settings: {', '.join(best)}; name the model explicitly")


def _img_size(state: dict[str, np.ndarray], num_prefix: int, patch_size: int, source: str) -> int:
    """The image size whose patch grid fills ``pos_embed`` after its ``num_prefix`` prefix entries."""
    pos_embed = state["pos_embed"]
    num_patches = pos_embed.shape[1] - num_prefix
    grid = math.isqrt(max(num_patches, 0))
    if grid * grid != num_patches:
        raise ValueError(f"{source}: cannot infer img_size: pos_embed {_fmt_shape(pos_embed.shape)} does not hold "
                         f"a square grid of patches; it holds {_seen_shapes(state)}")
    return grid * patch_size


def infer_model_args(state: dict[str, np.ndarray], source: str = "state dict") -> tuple[str, int, dict[str, Any]]:
    """Infer ``(model_name, num_classes, overrides)`` for :func:`src.models.create_model` from weight shapes.

    embed_dim, patch_size, depth, mlp_ratio, distillation (``dist_token``), LayerScale (``blocks.0.ls1.gamma``:
    DeiT III, whose ``pos_embed`` covers the patches only), img_size (``pos_embed`` length) and num_classes
    (``head.weight``) come from the shapes; num_heads cannot, so it is taken from the registered model of the
    same family and width (preferring the one needing the fewest overrides), among mindcv's models for a
    mindcv checkpoint and among the others otherwise (the families whose parameter names the file carries:
    ``ModelFamily.recognizes``). When several fit equally well, the one whose name the file name contains is
    chosen; otherwise a ValueError names them.
    """
    check_family_options(state, source)
    proj = _entry(state, "patch_embed.proj.weight", 4, source)
    _entry(state, "pos_embed", 3, source)
    head = _entry(state, "head.weight", 2, source)
    fc1 = _entry(state, "blocks.0.mlp.fc1.weight", 2, source)
    embed_dim, patch_size = proj.shape[0], proj.shape[2]
    distilled = "dist_token" in state
    layer_scale = "blocks.0.ls1.gamma" in state
    block_ids = {int(m.group(1)) for m in (re.match(r"blocks\.(\d+)\.", name) for name in state) if m}
    arch = {"patch_size": patch_size, "embed_dim": embed_dim, "depth": max(block_ids) + 1,
            "mlp_ratio": fc1.shape[0] / embed_dim}
    candidates = [name for name in list_models() if model_spec(name).distilled == distilled
                  and (model_spec(name).layer_scale_init is not None) == layer_scale
                  and model_spec(name).embed_dim == embed_dim
                  and model_family(name).recognizes(state)]
    if not candidates:
        families = [family.name for family in list_families() if family.recognizes(state)]
        kind = f"{' / '.join(families) or 'no family'}'s names, distilled={distilled}, layer_scale={layer_scale}"
        raise ValueError(f"{source}: cannot infer num_heads: embed_dim {embed_dim} ({kind}) matches no registered "
                         f"model; it holds {_seen_shapes(state)}; name the model and its architecture overrides "
                         "explicitly")
    overrides = {}
    for name in candidates:
        spec = model_spec(name)
        prefix = 0 if spec.no_embed_class else spec.num_prefix_tokens
        wanted = {"img_size": _img_size(state, prefix, patch_size, source), **arch}
        overrides[name] = {k: v for k, v in wanted.items() if getattr(spec, k) != v}
    fewest = min(len(changes) for changes in overrides.values())
    best = _pick_candidate([name for name in candidates if len(overrides[name]) == fewest], overrides, source)
    return best, head.shape[0], overrides[best]


def _converted_names(src: str, num_classes: int, class_names_file: PathLike | None) -> tuple[list[str] | None, str]:
    """The class names a converted file gets, and where they came from (for the summary)."""
    if class_names_file is not None:
        return load_class_names(class_names_file, num_classes), f"from {os.fspath(class_names_file)}"
    kept = read_class_names(src)
    if kept is not None:  # one of our .ckpt files: its names travel on
        return check_class_names(kept, f"{src}: stored class names", num_classes), f"kept from {src}"
    if num_classes == IMAGENET_NUM_CLASSES:
        return imagenet_class_names(), "of ImageNet-1k"
    return None, ""


def convert_checkpoint(src: PathLike, dst: PathLike, model_name: str | None = None,
                       num_classes: int | None = None, class_names_file: PathLike | None = None,
                       **overrides: Any) -> str:
    """Convert ``src`` (any supported format) to a MindSpore ``.ckpt`` at ``dst``; returns a one-line summary.

    Without ``model_name`` the architecture is inferred (:func:`infer_model_args`); with it, the registered
    architecture plus ``overrides`` is used and num_classes defaults to the file's head size. The weights are
    loaded strictly before anything is written. ``dst`` gets metadata ``model``, ``num_classes``, the
    overrides and ``source`` so the model can be rebuilt from the file alone, and the class names: those of
    ``class_names_file`` (one per line), else those stored in ``src``, else ImageNet-1k's for 1000 classes.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    state = read_state_dict(src)
    if model_name is None:
        if overrides:
            raise ValueError(f"architecture overrides {sorted(overrides)} need an explicit model name")
        model_name, inferred_classes, overrides = infer_model_args(state, src)
    else:
        # A file without a 2-D head.weight fails the strict load below, whatever num_classes is.
        head = state.get("head.weight")
        inferred_classes = head.shape[0] if head is not None and head.ndim == 2 else 1000
    num_classes = inferred_classes if num_classes is None else num_classes
    names, origin = _converted_names(src, num_classes, class_names_file)
    model = create_model(model_name, num_classes=num_classes, **overrides)
    load_state_dict(model, state, source=src)
    meta = {"model": model_name, "num_classes": num_classes, **overrides, "source": os.path.basename(src)}
    save_weights(model, dst, meta=meta if names is None else {**meta, CLASS_NAMES_KEY: names})
    details = "".join(f", {k}={v}" for k, v in overrides.items())
    stored = f"; {len(names)} class names {origin}" if names is not None else ""
    return (f"converted {src} ({len(state)} tensors) -> {dst}: {model_name} (num_classes={num_classes}{details})"
            f"{stored}")
