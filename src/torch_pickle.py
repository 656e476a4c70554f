"""Reading PyTorch zip checkpoints (``torch.save``) without torch and without running code from the file.

A ``.pth`` is a zip holding ``<folder>/data.pkl`` (a pickle of the state dict whose tensors reference storages
by persistent id), ``<folder>/data/<key>`` (one raw storage per key) and ``<folder>/byteorder``. The pickle is
read by a restricted unpickler that resolves only the few globals needed to rebuild tensors and plain
containers, so a malicious file cannot run code.
"""
import argparse
import collections
import io
import math
import pickle
import zipfile
from typing import Any, Dict, NamedTuple, Tuple

import numpy as np

__all__ = ["UnsafePickleError", "read_torch_zip", "bf16_to_f32"]


class UnsafePickleError(ValueError):
    """A PyTorch file's pickle references a global outside the small allow-list (possibly malicious)."""


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bit patterns (uint16) to float32: bfloat16 is the top half of a float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


class _StorageType(NamedTuple):
    """Stand-in for ``torch.<X>Storage`` (a NamedTuple, so a pickle BUILD cannot mutate it)."""
    name: str
    dtype: str
    bfloat16: bool


class _Storage(NamedTuple):
    """A storage record of the zip: a flat array in native byte order."""
    data: np.ndarray
    bfloat16: bool


_STORAGE_TYPES = {
    name: _StorageType(name, dtype, name == "BFloat16Storage")
    for name, dtype in (
        ("FloatStorage", "f4"), ("DoubleStorage", "f8"), ("HalfStorage", "f2"), ("BFloat16Storage", "u2"),
        ("LongStorage", "i8"), ("IntStorage", "i4"), ("ShortStorage", "i2"), ("CharStorage", "i1"),
        ("ByteStorage", "u1"), ("BoolStorage", "?"),
    )
}


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = None,
                       backward_hooks: Any = None, metadata: Any = None) -> np.ndarray:
    """numpy twin of ``torch._utils._rebuild_tensor_v2``: a (copied) strided view into a storage.

    Every argument comes from an untrusted pickle, so types and bounds are checked before ``as_strided``
    (which would otherwise read outside the buffer). ``requires_grad``/hooks/metadata do not affect values.
    """
    if not isinstance(storage, _Storage):
        raise ValueError(f"_rebuild_tensor_v2: expected a storage, got {type(storage).__name__}")
    ints = (storage_offset, *size, *stride) if isinstance(size, tuple) and isinstance(stride, tuple) else None
    if ints is None or len(size) != len(stride) or not all(type(v) is int and v >= 0 for v in ints):
        raise ValueError(f"_rebuild_tensor_v2: bad offset/size/stride {storage_offset!r} {size!r} {stride!r}")
    flat = storage.data
    if math.prod(size) == 0:
        out = np.zeros(size, dtype=flat.dtype)
    else:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size:
            raise ValueError(f"_rebuild_tensor_v2: tensor of size {size} stride {stride} offset {storage_offset} "
                             f"reaches element {last} of a storage with {flat.size} elements")
        item = flat.itemsize
        out = np.lib.stride_tricks.as_strided(flat[storage_offset:], shape=size,
                                              strides=tuple(s * item for s in stride), writeable=False).copy()
    return bf16_to_f32(out) if storage.bfloat16 else out


def _rebuild_parameter(data: Any, requires_grad: Any = None, backward_hooks: Any = None,
                       state: Any = None) -> np.ndarray:
    """numpy twin of ``torch._utils._rebuild_parameter(_with_state)``: a Parameter is just its tensor here."""
    if not isinstance(data, np.ndarray):
        raise ValueError(f"_rebuild_parameter: expected a tensor, got {type(data).__name__}")
    return data


_ALLOWED_GLOBALS: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    # DeiT's main.py stores its argparse namespace next to the weights ({"model": ..., "args": args}).
    ("argparse", "Namespace"): argparse.Namespace,
    **{("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for ``data.pkl`` that resolves only allow-listed globals and reads storages from the zip."""

    def __init__(self, path: str, archive: zipfile.ZipFile, prefix: str, byteorder: str) -> None:
        super().__init__(io.BytesIO(archive.read(f"{prefix}data.pkl")))
        self._path, self._archive, self._prefix, self._byteorder = path, archive, prefix, byteorder
        self._storages: Dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._path}: refusing to unpickle global '{module}.{name}': only tensors, storages and plain "
                "containers are allowed (not a plain state dict, or a malicious file)") from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str) and type(pid[4]) is int):
            raise ValueError(f"unsupported persistent id {pid!r} (expected a tensor storage)")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        if key not in self._storages:
            record = f"{self._prefix}data/{key}"
            try:
                raw = self._archive.read(record)
            except KeyError:
                raise ValueError(f"storage record '{record}' is missing") from None
            dtype = np.dtype(storage_type.dtype).newbyteorder("<" if self._byteorder == "little" else ">")
            if len(raw) < numel * dtype.itemsize:
                raise ValueError(f"storage record '{record}' has {len(raw)} bytes, "
                                 f"expected {numel} x {storage_type.name} ({numel * dtype.itemsize} bytes)")
            data = np.frombuffer(raw, dtype=dtype, count=numel).astype(dtype.newbyteorder("="))
            self._storages[key] = _Storage(data, storage_type.bfloat16)
        return self._storages[key]


def _archive_prefix(path: str, archive: zipfile.ZipFile) -> str:
    """The single top-level folder holding ``data.pkl`` (torch names it after the file, e.g. ``archive/``)."""
    prefixes = [name[: -len("data.pkl")] for name in archive.namelist()
                if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(prefixes) != 1:
        raise ValueError(f"{path}: not a PyTorch checkpoint: expected one '<folder>/data.pkl' record in the zip, "
                         f"found {len(prefixes)}")
    return prefixes[0]


def _unwrap_state_dict(path: str, obj: Any) -> Dict[str, np.ndarray]:
    """Accept a bare state dict or the DeiT release layout ``{"model": state_dict, ...}``."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif not (isinstance(obj, dict) and obj and all(isinstance(v, np.ndarray) for v in obj.values())):
        found = f"dict with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path}: expected a state dict or {{'model': state_dict}}, found a {found}")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise ValueError(f"{path}: state dict entry {key!r} is a {type(value).__name__}, expected a tensor")
    if not obj:
        raise ValueError(f"{path}: the state dict is empty")
    return dict(obj)


def read_torch_zip(path: str) -> Dict[str, np.ndarray]:
    """The state dict of a PyTorch zip checkpoint (``torch.save``), without torch and without running pickle code.

    Accepts a bare state dict or ``{"model": state_dict, ...}``; returns ``{name: array}`` in the file's order
    (bfloat16 widened to float32, other dtypes as stored). Raises UnsafePickleError for a pickle naming a global
    outside the allow-list, ValueError for anything else unreadable.
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a PyTorch zip checkpoint (legacy torch<1.6 format or not a torch file); "
                         "re-save it with a recent torch: torch.save(torch.load(f), f)")
    with zipfile.ZipFile(path) as archive:
        prefix = _archive_prefix(path, archive)
        names = set(archive.namelist())
        # Files from before the byteorder record existed were written on little-endian machines.
        record = f"{prefix}byteorder"
        byteorder = archive.read(record).decode().strip() if record in names else "little"
        if byteorder not in ("little", "big"):
            raise ValueError(f"{path}: unknown byteorder record {byteorder!r}, expected 'little' or 'big'")
        try:
            obj = _RestrictedUnpickler(path, archive, prefix, byteorder).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, zipfile.BadZipFile, ValueError, EOFError, TypeError, AttributeError,
                IndexError) as e:
            raise ValueError(f"{path}: cannot rebuild the tensors of {prefix}data.pkl "
                             f"({type(e).__name__}: {e})") from e
    return _unwrap_state_dict(path, obj)
