"""Reading PyTorch zip checkpoints (``torch.save``) without torch and without trusting the file.

A ``.pth`` is a zip holding ``<folder>/data.pkl`` (a pickle of the state dict whose tensors reference storages
by persistent id), ``<folder>/data/<key>`` (one raw storage per key) and ``<folder>/byteorder``. Plain
``pickle`` would run any code the file names, and even a pickle of plain containers can crash or exhaust the
process, so the file is read in three steps:

1. :func:`check_pickle` walks the pickle's opcodes without building anything and refuses it when it is longer
   than :data:`MAX_OPCODES`, nests containers deeper than :data:`MAX_DEPTH` (hashing a tuple nested millions
   deep overflows the C stack), uses memo indices of :data:`MAX_OPCODES` or more (the C unpickler allocates
   memo slots up to the index), changes a container after putting it inside another (so the depth it computes
   is exact), or applies BUILD to a class or function (which would patch it for the whole process).
2. The C unpickler builds it, resolving only the allow-listed globals (:data:`_ALLOWED_GLOBALS`). Storages and
   tensors come back as references (:class:`StorageRef`, :class:`TensorRef`): a storage's zip record must hold
   exactly the bytes its persistent id declares, and every tensor's size, stride and offset must lie inside
   its storage.
3. The memory the state dict's tensors need (their float32 copies plus the storage bytes they reach) must stay
   within :data:`EXPANSION_LIMIT` times the file's size (at least :data:`EXPANSION_FLOOR`); only then are the
   storages read, each only as far as its tensors reach.

No value from the file is ``repr()``-ed into a message: :func:`describe` says what kind of value it is.
"""
import argparse
import collections
import io
import math
import os
import pickle
import pickletools
import struct
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

__all__ = ["UnsafePickleError", "read_torch_zip", "check_pickle", "describe", "quoted", "bf16_to_f32", "MAX_OPCODES",
           "MAX_DEPTH", "MAX_PICKLE_BYTES", "EXPANSION_LIMIT", "EXPANSION_FLOOR"]

# A DeiT state dict (152 tensors, torch 2.x): data.pkl of 15 KB, 4,690 opcodes, containers nested 6 deep.
MAX_PICKLE_BYTES = 64 << 20
MAX_OPCODES = 1_000_000
MAX_DEPTH = 32
MAX_DIMS = 32  # numpy's limit
EXPANSION_LIMIT = 8  # memory for the tensors / file size; float16 weights need 3x (raw + float32 copy)
EXPANSION_FLOOR = 16 << 20


class UnsafePickleError(ValueError):
    """A PyTorch file's pickle does what no state dict needs: it names a global outside the small allow-list,
    or its structure exceeds the limits above (possibly a malicious file)."""


class _Invalid(ValueError):
    """What is wrong with the file, without its path (the reader adds it)."""


# ------------------------------------------------------------------------------------------- messages

def quoted(text: str, limit: int = 60) -> str:
    """An untrusted string for a message: quoted, truncated, non-printable characters as '?'."""
    shown = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return f"'{shown}{'...' if len(text) > limit else ''}'"


def describe(value: Any) -> str:
    """What kind of value an untrusted object is, for messages: never its repr, which may be huge or recurse."""
    if isinstance(value, str):
        return f"the string {quoted(value)}"
    if type(value) is int:
        return f"the int {value}" if abs(value) < 10 ** 18 else f"an int of {value.bit_length()} bits"
    if isinstance(value, (tuple, list, dict, set, frozenset)):
        return f"a {type(value).__name__} of {len(value)} item{'' if len(value) == 1 else 's'}"
    return f"a {type(value).__name__}"


def _fmt_bytes(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} PiB"


def _dims(values: tuple[int, ...]) -> str:
    """A checked size or stride tuple (at most MAX_DIMS ints below 2**62), e.g. ``[3, 4]``."""
    return "[" + ", ".join(map(str, values)) + "]"


# ------------------------------------------------------------------------------------------- step 1: check

_ATOM, _GLOBAL, _FROZEN, _OBJECT = "atom", "global", "frozen", "object"
_ATOM_OPS = ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING",
             "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "UNICODE",
             "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "FLOAT", "BINFLOAT", "NONE", "NEWTRUE", "NEWFALSE",
             "NEXT_BUFFER", "PERSID")


class _Node:
    """What the check knows of a value the unpickler would build: kind, nesting depth, and whether it already
    sits inside another value (then it may not change any more, so its parents' depths stay exact)."""
    __slots__ = ("kind", "depth", "inside")

    def __init__(self, kind: str, depth: int = 0) -> None:
        self.kind, self.depth, self.inside = kind, depth, False


class _PickleCheck:
    """Simulates the C unpickler's stack, marks and memo on :class:`_Node` values (see the module docstring)."""

    def __init__(self) -> None:
        self.stack: list[_Node] = []
        self.marks: list[int] = []
        self.memo: dict[int, _Node] = {}
        ops: dict[str, Callable[[Any], None]] = dict.fromkeys(_ATOM_OPS, lambda _: self._push(_Node(_ATOM)))
        ops.update(dict.fromkeys(("GLOBAL", "EXT1", "EXT2", "EXT4"), lambda _: self._push(_Node(_GLOBAL))))
        ops.update(dict.fromkeys(("GET", "BINGET", "LONG_BINGET"), self._memo_get))
        ops.update(dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT"), self._memo_put))
        ops.update(dict.fromkeys(("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"), lambda _: self._push(_Node(_OBJECT, 1))))
        ops.update(dict.fromkeys(("TUPLE", "FROZENSET"), lambda _: self._push(self._new(_FROZEN, self._pop_mark()))))
        ops.update(dict.fromkeys(("LIST", "DICT", "INST"), lambda _: self._push(self._new(_OBJECT, self._pop_mark()))))
        ops.update(dict.fromkeys(("APPENDS", "SETITEMS", "ADDITEMS"), lambda _: self._fill(self._pop_mark())))
        ops.update(dict.fromkeys(("REDUCE", "NEWOBJ"), lambda _: self._call(self._pop(2))))
        ops.update(dict.fromkeys(("PROTO", "FRAME"), lambda _: None))
        ops.update({
            "STACK_GLOBAL": lambda _: (self._pop(2), self._push(_Node(_GLOBAL))),
            "EMPTY_TUPLE": lambda _: self._push(_Node(_FROZEN, 1)),
            "TUPLE1": lambda _: self._push(self._new(_FROZEN, self._pop(1))),
            "TUPLE2": lambda _: self._push(self._new(_FROZEN, self._pop(2))),
            "TUPLE3": lambda _: self._push(self._new(_FROZEN, self._pop(3))),
            "APPEND": lambda _: self._fill(self._pop(1)),
            "SETITEM": lambda _: self._fill(self._pop(2)),
            "BUILD": lambda _: self._fill(self._pop(1), build=True),
            "NEWOBJ_EX": lambda _: self._call(self._pop(3)),
            "OBJ": lambda _: self._call(self._pop_mark()),
            "BINPERSID": lambda _: (self._pop(1), self._push(_Node(_ATOM))),
            "MEMOIZE": lambda _: self._memo_put(len(self.memo)),
            "MARK": lambda _: self.marks.append(len(self.stack)),
            "POP_MARK": lambda _: self._pop_mark(),
            "POP": lambda _: self._pop_one_or_mark(),
            "DUP": lambda _: self._push(self._top()),
            "READONLY_BUFFER": lambda _: self._top(),
            "STOP": lambda _: self._top(),
        })
        self.ops = ops

    def run(self, data: bytes) -> None:
        try:
            for count, (opcode, arg, _) in enumerate(pickletools.genops(data), 1):
                if count > MAX_OPCODES:
                    raise UnsafePickleError(f"the pickle has more than {MAX_OPCODES:,} opcodes")
                self.ops[opcode.name](arg)
        except ValueError as e:  # genops: unknown opcode, truncated or unparsable argument
            if isinstance(e, (UnsafePickleError, _Invalid)):
                raise
            raise _Invalid(f"not a valid pickle ({str(e)[:100]})") from None

    def _fence(self) -> int:
        return self.marks[-1] if self.marks else 0

    def _push(self, node: _Node) -> None:
        self.stack.append(node)

    def _pop(self, n: int) -> list[_Node]:
        if len(self.stack) - n < self._fence():
            raise _Invalid("not a valid pickle (stack underflow)")
        items = self.stack[len(self.stack) - n:]
        del self.stack[len(self.stack) - n:]
        return items

    def _pop_mark(self) -> list[_Node]:
        if not self.marks:
            raise _Invalid("not a valid pickle (no mark)")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def _pop_one_or_mark(self) -> None:
        if self.marks and self.marks[-1] == len(self.stack):
            self.marks.pop()  # the C unpickler's POP drops an empty mark
        else:
            self._pop(1)

    def _top(self) -> _Node:
        if len(self.stack) <= self._fence():
            raise _Invalid("not a valid pickle (stack underflow)")
        return self.stack[-1]

    def _memo_get(self, index: Any) -> None:
        if index not in self.memo:
            raise _Invalid("not a valid pickle (memo entry read before it is written)")
        self._push(self.memo[index])

    def _memo_put(self, index: Any) -> None:
        if not 0 <= index < MAX_OPCODES:
            raise UnsafePickleError(f"the pickle uses memo index {index}, more than {MAX_OPCODES:,}")
        self.memo[index] = self._top()

    def _new(self, kind: str, items: list[_Node]) -> _Node:
        node = _Node(kind, 1 + max((item.depth for item in items), default=0))
        if node.depth > MAX_DEPTH:
            raise UnsafePickleError(f"the pickle nests containers more than {MAX_DEPTH} deep")
        for item in items:
            item.inside = True
        return node

    def _fill(self, items: list[_Node], build: bool = False) -> None:
        """APPEND(S), SETITEM(S), ADDITEMS, BUILD: ``items`` go into the value below them."""
        target = self._top()
        if build and target.kind == _GLOBAL:
            raise UnsafePickleError("the pickle sets attributes of a class or function (BUILD on a global)")
        if target.kind != _OBJECT:
            raise _Invalid("not a valid pickle (adds items to an immutable value)")
        if target.inside:
            raise UnsafePickleError("the pickle changes a container after putting it inside another "
                                    "(a self-referencing or crafted structure)")
        target.depth = max(target.depth, self._new(_OBJECT, items).depth)

    def _call(self, items: list[_Node]) -> None:
        """REDUCE, NEWOBJ(_EX), OBJ: ``items[0]`` is called with the rest."""
        if not items or items[0].kind != _GLOBAL:
            raise UnsafePickleError("the pickle calls something other than an allow-listed class or function")
        self._push(self._new(_OBJECT, items[1:]))


def check_pickle(data: bytes) -> None:
    """Refuse ``data`` (a pickle) when building it could crash or exhaust the process (module docstring, step 1).

    Raises UnsafePickleError for a limit exceeded, ValueError for a malformed pickle; builds nothing.
    """
    _PickleCheck().run(data)


# ------------------------------------------------------------------------------------------- step 2: unpickle

def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bit patterns (uint16) to float32: bfloat16 is the top half of a float32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


class _StorageType(NamedTuple):
    """Stand-in for ``torch.<X>Storage`` (a NamedTuple, so a pickle BUILD cannot mutate it)."""
    name: str
    dtype: str  # numpy dtype of one element, without byte order ("u2" holds bfloat16 bits)
    bfloat16: bool

    @property
    def out_itemsize(self) -> int:
        """Bytes per element once read: floating storages become float32."""
        return 4 if self.bfloat16 or self.dtype[0] == "f" else np.dtype(self.dtype).itemsize


_STORAGE_TYPES = {
    name: _StorageType(name, dtype, name == "BFloat16Storage")
    for name, dtype in (
        ("FloatStorage", "f4"), ("DoubleStorage", "f8"), ("HalfStorage", "f2"), ("BFloat16Storage", "u2"),
        ("LongStorage", "i8"), ("IntStorage", "i4"), ("ShortStorage", "i2"), ("CharStorage", "i1"),
        ("ByteStorage", "u1"), ("BoolStorage", "?"),
    )
}


class StorageRef(NamedTuple):
    """A storage named by a persistent id, not read yet: zip record ``record`` holds ``numel`` elements."""
    key: str
    type: _StorageType
    numel: int
    record: str


class TensorRef(NamedTuple):
    """What ``_rebuild_tensor_v2`` returns here: a checked strided view of a storage, not read yet.

    ``reach``: elements of the storage from its start that the view touches (0 for an empty tensor).
    """
    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    numel: int
    reach: int


def _is_index(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2 ** 62


def _is_dims(values: Any) -> bool:
    return type(values) is tuple and len(values) <= MAX_DIMS and all(_is_index(v) for v in values)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = None,
                       backward_hooks: Any = None, metadata: Any = None) -> TensorRef:
    """``torch._utils._rebuild_tensor_v2`` for this reader: checks the view lies inside its storage.

    ``requires_grad``/hooks/metadata do not affect values.
    """
    if not isinstance(storage, StorageRef):
        raise _Invalid(f"a tensor's storage is {describe(storage)}, expected a storage")
    if not (_is_index(storage_offset) and _is_dims(size) and _is_dims(stride) and len(size) == len(stride)):
        raise _Invalid(f"a tensor's offset, size and stride are {describe(storage_offset)}, {describe(size)} and "
                       f"{describe(stride)}; expected an int and two equally long tuples of at most {MAX_DIMS} "
                       f"ints, each in [0, 2**62)")
    if math.prod(max(n, 1) for n in size) >= 2 ** 60:  # numpy cannot even describe such an array
        raise _Invalid(f"a tensor of size {_dims(size)} is too large")
    numel = math.prod(size)
    reach = storage_offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1 if numel else 0
    if reach > storage.numel:
        raise _Invalid(f"a tensor of size {_dims(size)}, stride {_dims(stride)}, offset {storage_offset} reaches "
                       f"element {reach - 1} of a storage with {storage.numel} elements")
    return TensorRef(storage, storage_offset, size, stride, numel, reach)


def _rebuild_parameter(data: Any, requires_grad: Any = None, backward_hooks: Any = None,
                       state: Any = None) -> TensorRef:
    """``torch._utils._rebuild_parameter(_with_state)``: a Parameter is just its tensor here."""
    if not isinstance(data, TensorRef):
        raise _Invalid(f"a Parameter holds {describe(data)}, expected a tensor")
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    # DeiT's main.py stores its argparse namespace next to the weights ({"model": ..., "args": args}).
    ("argparse", "Namespace"): argparse.Namespace,
    **{("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for ``data.pkl``: only allow-listed globals; storages become checked :class:`StorageRef`."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix = archive, prefix
        self._storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle global {quoted(f'{module}.{name}')}: only tensors, storages and plain "
                "containers are allowed (not a plain state dict, or a malicious file)") from None

    def persistent_load(self, pid: Any) -> StorageRef:
        if not (type(pid) is tuple and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and type(pid[2]) is str and _is_index(pid[4])):
            raise _Invalid(f"unsupported persistent id ({describe(pid)}): expected ('storage', storage type, key, "
                           f"location, number of elements)")
        storage_type, key, numel = pid[1], pid[2], pid[4]
        ref = self._storages.get(key)
        if ref is None:
            record = f"{self._prefix}data/{key}"
            try:
                size = self._archive.getinfo(record).file_size
            except KeyError:
                raise _Invalid(f"storage record {quoted(record)} is missing") from None
            need = numel * np.dtype(storage_type.dtype).itemsize
            if size != need:  # torch writes exactly the storage; more would only inflate for nothing
                raise _Invalid(f"storage record {quoted(record)} holds {size} bytes, the pickle declares {numel} x "
                               f"{storage_type.name} ({need} bytes)")
            ref = self._storages[key] = StorageRef(key, storage_type, numel, record)
        elif (ref.type, ref.numel) != (storage_type, numel):
            raise _Invalid(f"storage {quoted(key)} is declared twice with different types or sizes")
        return ref


# ------------------------------------------------------------------------------------------- step 3: read

def _archive_prefix(archive: zipfile.ZipFile) -> str:
    """The single top-level folder holding ``data.pkl`` (torch names it after the file, e.g. ``archive/``)."""
    prefixes = [name[: -len("data.pkl")] for name in archive.namelist()
                if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(prefixes) != 1:
        raise _Invalid(f"not a PyTorch checkpoint: expected one '<folder>/data.pkl' record in the zip, "
                       f"found {len(prefixes)}")
    return prefixes[0]


def _byteorder(archive: zipfile.ZipFile, prefix: str) -> str:
    record = f"{prefix}byteorder"
    try:
        size = archive.getinfo(record).file_size
    except KeyError:
        return "little"  # files from before the record existed were written on little-endian machines
    if size > 16:
        raise _Invalid(f"the byteorder record is {size} bytes, expected 'little' or 'big'")
    text = archive.read(record).decode("ascii", "replace").strip()
    if text not in ("little", "big"):
        raise _Invalid(f"unknown byteorder record {quoted(text)}, expected 'little' or 'big'")
    return text


def _unpickle(archive: zipfile.ZipFile, prefix: str) -> Any:
    record = f"{prefix}data.pkl"
    size = archive.getinfo(record).file_size
    if size > MAX_PICKLE_BYTES:
        raise UnsafePickleError(f"{record} is {_fmt_bytes(size)}, more than {_fmt_bytes(MAX_PICKLE_BYTES)}")
    data = archive.read(record)
    check_pickle(data)
    return _RestrictedUnpickler(data, archive, prefix).load()


def _key_list(obj: dict[Any, Any]) -> str:
    keys = [quoted(k) if isinstance(k, str) else describe(k) for k in list(obj)[:8]]
    return ", ".join(keys) + (f" (and {len(obj) - 8} more)" if len(obj) > 8 else "")


def _unwrap_state_dict(obj: Any) -> dict[str, TensorRef]:
    """Accept a bare state dict or the DeiT release layout ``{"model": state_dict, ...}``."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif not (isinstance(obj, dict) and obj and all(isinstance(v, TensorRef) for v in obj.values())):
        found = f"a dict with keys {_key_list(obj)}" if isinstance(obj, dict) else describe(obj)
        raise _Invalid(f"expected a state dict or {{'model': state_dict}}, found {found}")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, TensorRef):
            name = quoted(key) if isinstance(key, str) else describe(key)
            raise _Invalid(f"state dict entry {name} is {describe(value)}, expected a tensor")
    if not obj:
        raise _Invalid("the state dict is empty")
    return dict(obj)


def _check_memory(state: dict[str, TensorRef], reach: dict[StorageRef, int], file_size: int) -> None:
    """Refuse a file whose tensors need far more memory than its size (stride-0 views, inflating records)."""
    need = sum(ref.numel * ref.storage.type.out_itemsize for ref in state.values())
    need += sum(n * np.dtype(storage.type.dtype).itemsize for storage, n in reach.items())
    limit = max(EXPANSION_FLOOR, EXPANSION_LIMIT * file_size)
    if need > limit:
        name, ref = max(state.items(), key=lambda item: item[1].numel)
        raise UnsafePickleError(
            f"its tensors would need {_fmt_bytes(need)} of memory, more than {EXPANSION_LIMIT}x the file's "
            f"{_fmt_bytes(file_size)} (at least {_fmt_bytes(EXPANSION_FLOOR)} is allowed); the largest is "
            f"{quoted(name)} of size {_dims(ref.size)}, stored in {ref.storage.numel} elements")


def _read_storage(archive: zipfile.ZipFile, storage: StorageRef, count: int, byteorder: str) -> np.ndarray:
    """The first ``count`` elements of a storage record, in the file's byte order (read only that far)."""
    dtype = np.dtype(storage.type.dtype).newbyteorder("<" if byteorder == "little" else ">")
    with archive.open(storage.record) as f:
        raw = f.read(count * dtype.itemsize)
    if len(raw) != count * dtype.itemsize:
        raise _Invalid(f"storage record {quoted(storage.record)} ends after {len(raw)} bytes, its zip header "
                       f"says it holds {storage.numel * dtype.itemsize}")
    return np.frombuffer(raw, dtype=dtype)


def _tensor(flat: np.ndarray, ref: TensorRef) -> np.ndarray:
    """Copy one checked view out of its storage: floating types as float32, all in native byte order."""
    if ref.numel == 0:
        view = np.zeros(ref.size, dtype=flat.dtype)
    else:
        view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=ref.size, writeable=False,
                                               strides=tuple(s * flat.itemsize for s in ref.stride))
    if ref.storage.type.bfloat16:
        return bf16_to_f32(view)
    return view.astype(np.float32 if flat.dtype.kind == "f" else flat.dtype.newbyteorder("="))


def _materialize(archive: zipfile.ZipFile, state: dict[str, TensorRef], byteorder: str,
                 file_size: int) -> dict[str, np.ndarray]:
    users: dict[StorageRef, list[str]] = {}
    for name, ref in state.items():
        users.setdefault(ref.storage, []).append(name)
    reach = {storage: max(state[name].reach for name in names) for storage, names in users.items()}
    _check_memory(state, reach, file_size)
    out = {}
    for storage, names in users.items():  # one storage at a time: its raw bytes are freed before the next
        flat = _read_storage(archive, storage, reach[storage], byteorder)
        out.update((name, _tensor(flat, state[name])) for name in names)
    return {name: out[name] for name in state}


def read_torch_zip(path: str) -> dict[str, np.ndarray]:
    """The state dict of a PyTorch zip checkpoint (``torch.save``), read as the module docstring describes.

    Accepts a bare state dict or ``{"model": state_dict, ...}`` (other entries are not read); returns
    ``{name: array}`` in the file's order, floating tensors as float32, others in native byte order.
    Raises UnsafePickleError for a disallowed global or an exceeded limit, ValueError for anything else
    unreadable; each message is one line starting with ``path``.
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a PyTorch zip checkpoint (legacy torch<1.6 format or not a torch file); "
                         "re-save it with a recent torch: torch.save(torch.load(f), f)")
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(archive)
            byteorder = _byteorder(archive, prefix)
            state = _unwrap_state_dict(_unpickle(archive, prefix))
            return _materialize(archive, state, byteorder, os.path.getsize(path))
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except _Invalid as e:
        raise ValueError(f"{path}: {e}") from None
    except MemoryError:
        raise ValueError(f"{path}: not enough memory to read this checkpoint") from None
    # What the C unpickler, zipfile and zlib raise for damaged or crafted input; PPT_DEBUG=1 shows the chain.
    except (pickle.UnpicklingError, zipfile.BadZipFile, zlib.error, struct.error, EOFError, TypeError,
            AttributeError, IndexError, KeyError, ValueError, OverflowError, RuntimeError) as e:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: "
                         f"{quoted(str(e).splitlines()[0] if str(e) else '', 120)})") from e
