"""A minimal torch-free writer of PyTorch zip checkpoints for the tests, emitting the pickle opcodes torch.save
emits (and, through the ``_p_*`` pieces, whatever crafted pickle a test needs)."""
import argparse
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np


def p_str(text: str) -> bytes:
    raw = text.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def p_int(value: int) -> bytes:
    """Any int: BININT as torch writes small ones, else the standard library's LONG1."""
    return pickle.BININT + struct.pack("<i", value) if -2 ** 31 <= value < 2 ** 31 else p_embed(value)


def p_ints(values: tuple[int, ...]) -> bytes:
    return pickle.MARK + b"".join(map(p_int, values)) + pickle.TUPLE


def p_global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def p_ordered_dict() -> bytes:
    return p_global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE


def p_embed(obj) -> bytes:
    """A plain object pickled by the standard library, without its PROTO header and STOP."""
    return pickle.dumps(obj, protocol=2)[2:-1]


def p_tensor(key: str, storage_type: str, numel: int, offset: int, shape, stride) -> bytes:
    storage = (pickle.MARK + p_str("storage") + p_global("torch", storage_type) + p_str(key) + p_str("cpu")
               + p_int(numel) + pickle.TUPLE + pickle.BINPERSID)
    args = storage + p_int(offset) + p_ints(shape) + p_ints(stride) + pickle.NEWFALSE + p_ordered_dict()
    return p_global("torch._utils", "_rebuild_tensor_v2") + pickle.MARK + args + pickle.TUPLE + pickle.REDUCE


def write_zip(path: Path, pkl: bytes, storages: dict[str, bytes], byteorder: str = "little") -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", byteorder)
        for key, raw in storages.items():
            zf.writestr(f"archive/data/{key}", raw)
        zf.writestr("archive/version", "3\n")


def write_pth(path: Path, entries: dict[str, tuple], storages: dict[str, bytes], storage_type: str = "FloatStorage",
               byteorder: str = "little", wrap: bool = True) -> None:
    """``entries``: name -> (storage key, numel, offset, shape, stride). Mirrors torch: an OrderedDict state dict
    with ``_metadata`` set by BUILD; ``wrap`` gives DeiT's training layout {"model", "epoch", "args"}."""
    items = b"".join(p_str(name) + p_tensor(key, storage_type, *rest) for name, (key, *rest) in entries.items())
    state = (p_ordered_dict() + pickle.MARK + items + pickle.SETITEMS
             + p_embed({"_metadata": {"": {"version": 1}}}) + pickle.BUILD)
    if wrap:
        state = (pickle.EMPTY_DICT + pickle.MARK + p_str("model") + state + p_str("epoch") + p_int(5)
                 + p_str("args") + p_embed(argparse.Namespace(lr=5e-4)) + pickle.SETITEMS)
    write_zip(path, pickle.PROTO + b"\x02" + state + pickle.STOP, storages, byteorder)


def encode(x: np.ndarray, storage_type: str, byteorder: str) -> bytes:
    order = "<" if byteorder == "little" else ">"
    if storage_type == "BFloat16Storage":
        return (x.astype(np.float32).view(np.uint32) >> 16).astype(order + "u2").tobytes()
    kind = {"FloatStorage": "f4", "HalfStorage": "f2", "DoubleStorage": "f8"}[storage_type]
    return x.astype(order + kind).tobytes()


def state_to_pth(path: Path, state: dict[str, np.ndarray], storage_type: str = "FloatStorage",
                  byteorder: str = "little", wrap: bool = True) -> None:
    """One contiguous storage per tensor, like ``torch.save(model.state_dict())``."""
    entries, storages = {}, {}
    for i, (name, x) in enumerate(state.items()):
        stride = tuple(int(np.prod(x.shape[d + 1:])) for d in range(x.ndim))
        entries[name] = (str(i), x.size, 0, x.shape, stride)
        storages[str(i)] = encode(x, storage_type, byteorder)
    write_pth(path, entries, storages, storage_type, byteorder, wrap)
