"""Crafted PyTorch checkpoints (issue #13, items 1-3): src/io/torch_pickle.py refuses them in one line, before
building the crafted values or allocating what they ask for, and never crashes the interpreter."""

import argparse
import pickle
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from src.io import torch_pickle
from src.io.checkpoint import UnsafePickleError, read_state_dict

from ..torch_zip import p_global, p_int, p_ints, p_str, p_tensor, write_pth, write_zip

PROTO = pickle.PROTO + b"\x02"


def _pth(path: Path, body: bytes, storages=None) -> Path:
    """A zip whose data.pkl is ``body`` (opcodes after PROTO, without STOP)."""
    write_zip(path, PROTO + body + pickle.STOP, storages or {})
    return path


def _one_line_error(path: Path, match: str, kind=ValueError) -> str:
    with pytest.raises(kind) as info:
        read_state_dict(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    assert message.startswith(f"{path}: ") and match in message, message
    return message


def _peak_mib(fn) -> float:
    """Peak of Python and numpy allocations (numpy reports its buffers to tracemalloc) while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
    except ValueError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2 ** 20


@pytest.mark.parametrize("body", [
    pickle.MARK * 100_000 + pickle.LIST * 100_000,
    pickle.EMPTY_TUPLE + pickle.TUPLE1 * 100_000,
    pickle.MARK * 100_000 + pickle.FROZENSET * 100_000,
], ids=["lists", "tuples", "frozensets"])
def test_deep_nesting_is_refused_before_it_is_built(tmp_path, body):
    _one_line_error(_pth(tmp_path / "deep.pth", body), "nests containers more than 32 deep", UnsafePickleError)


def test_nesting_through_the_memo_is_refused(tmp_path):
    # Lists filled after being put inside another would hide their depth from a stack-only count.
    body = (pickle.EMPTY_LIST + pickle.BINPUT + b"\x00" + pickle.EMPTY_LIST + pickle.BINPUT + b"\x01"
            + pickle.APPEND + pickle.BINGET + b"\x01" + pickle.EMPTY_LIST + pickle.APPEND)
    _one_line_error(_pth(tmp_path / "memo.pth", body), "changes a container after putting it inside another",
                    UnsafePickleError)


def test_self_referencing_container_is_refused(tmp_path):
    body = pickle.EMPTY_LIST + pickle.BINPUT + b"\x00" + pickle.BINGET + b"\x00" + pickle.APPEND + pickle.POP
    body += pickle.BINGET + b"\x00" + pickle.BINGET + b"\x00" + pickle.APPEND
    _one_line_error(_pth(tmp_path / "cycle.pth", body), "self-referencing or crafted", UnsafePickleError)


def test_huge_memo_index_is_refused_before_the_unpickler_allocates_it(tmp_path):
    # The C unpickler sizes its memo to twice the largest index: 2**26 -> 1 GiB from a 13-byte pickle.
    body = pickle.NONE + pickle.LONG_BINPUT + struct.pack("<I", 2 ** 26)
    path = _pth(tmp_path / "memo.pth", body)
    assert _peak_mib(lambda: read_state_dict(path)) < 8
    _one_line_error(path, "memo index 67108864", UnsafePickleError)


def test_too_many_opcodes_and_too_large_pickle(tmp_path, monkeypatch):
    monkeypatch.setattr(torch_pickle, "MAX_OPCODES", 100)
    _one_line_error(_pth(tmp_path / "long.pth", (pickle.NONE + pickle.POP) * 60 + pickle.NONE),
                    "more than 100 opcodes", UnsafePickleError)
    monkeypatch.setattr(torch_pickle, "MAX_PICKLE_BYTES", 1000)
    _one_line_error(_pth(tmp_path / "big.pth", p_str("x" * 2000)), "data.pkl is 2.0 KiB, more than 1000 B",
                    UnsafePickleError)


def test_build_on_an_allowed_class_is_refused_and_changes_nothing(tmp_path):
    # BUILD on the class itself would set attributes of argparse.Namespace for the whole process.
    before = dict(vars(argparse.Namespace))
    slots = pickle.EMPTY_DICT + p_str("__repr__") + p_global("collections", "OrderedDict") + pickle.SETITEM
    body = p_global("argparse", "Namespace") + pickle.NONE + slots + pickle.TUPLE2 + pickle.BUILD
    _one_line_error(_pth(tmp_path / "patch.pth", body), "sets attributes of a class or function", UnsafePickleError)
    assert dict(vars(argparse.Namespace)) == before


def test_calling_a_non_global_is_refused(tmp_path):
    body = pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.REDUCE
    _one_line_error(_pth(tmp_path / "call.pth", body), "calls something other than an allow-listed",
                    UnsafePickleError)


@pytest.mark.parametrize("raw,match", [
    (b"\xff", "not a valid pickle"),
    (pickle.APPEND, "not a valid pickle (stack underflow)"),
    (pickle.BINGET + b"\x05", "memo entry read before it is written"),
    (pickle.MARK + pickle.NONE + pickle.TUPLE3, "stack underflow"),
])
def test_malformed_pickles(tmp_path, raw, match):
    _one_line_error(_pth(tmp_path / "bad.pth", raw), match)


def _tensor_pth(path: Path, numel: int, offset: int, size, stride, storage: bytes = b"\0" * 4) -> Path:
    write_pth(path, {"w": ("0", numel, offset, size, stride)}, {"0": storage}, wrap=False)
    return path


def test_size_beyond_int64_with_stride_0(tmp_path):
    # Before: OverflowError traceback.
    path = _tensor_pth(tmp_path / "big.pth", 1, 0, (2 ** 64,), (0,))
    _one_line_error(path, "a tensor's offset, size and stride are the int 0, a tuple of 1 item and a tuple of 1 "
                          "item; expected an int and two equally long tuples of at most 32 ints, each in [0, 2**62)")


def test_size_2_40_is_refused_before_allocating(tmp_path):
    # Before: numpy's "Unable to allocate 4.00 TiB" traceback.
    declared = _tensor_pth(tmp_path / "declared.pth", 2 ** 40, 0, (2 ** 40,), (1,))
    _one_line_error(declared, "storage record 'archive/data/0' holds 4 bytes, the pickle declares 1099511627776 x "
                              "FloatStorage (4398046511104 bytes)")
    expanded = _tensor_pth(tmp_path / "expanded.pth", 1, 0, (2 ** 40,), (0,))
    assert _peak_mib(lambda: read_state_dict(expanded)) < 8
    _one_line_error(expanded, "its tensors would need 4.0 TiB of memory", UnsafePickleError)


def _nested(depth: int) -> bytes:
    return pickle.EMPTY_TUPLE + pickle.TUPLE1 * depth


@pytest.mark.parametrize("where", ["persistent id", "size"])
def test_deeply_nested_persistent_id_or_size(tmp_path, where):
    # Before: RecursionError while repr()-ing the value into the error message.
    if where == "persistent id":
        tensor = p_global("torch._utils", "_rebuild_tensor_v2") + pickle.MARK + _nested(50_000) + pickle.BINPERSID
        tensor += p_int(0) + p_ints((1,)) + p_ints((1,)) + pickle.TUPLE + pickle.REDUCE
    else:
        tensor = p_tensor("0", "FloatStorage", 1, 0, (1,), (1,)).replace(p_ints((1,)), _nested(50_000), 1)
    body = pickle.EMPTY_DICT + p_str("w") + tensor + pickle.SETITEM
    _one_line_error(_pth(tmp_path / "nested.pth", body, {"0": b"\0" * 4}), "nests containers more than 32 deep",
                    UnsafePickleError)


def test_untrusted_values_are_described_not_repr_ed(tmp_path):
    huge = "\x1b[2J" + "A" * 10 ** 6
    body = (pickle.EMPTY_DICT + p_str("w") + p_global("torch._utils", "_rebuild_parameter") + p_str(huge)
            + pickle.TUPLE1 + pickle.REDUCE + pickle.SETITEM)
    _one_line_error(_pth(tmp_path / "str.pth", body), "a Parameter holds the string '?[2JAAAA")
    body = pickle.EMPTY_DICT + p_str(huge) + pickle.NONE + pickle.SETITEM
    message = _one_line_error(_pth(tmp_path / "key.pth", body), "expected a state dict or {'model': state_dict}, "
                                                                 "found a dict with keys '?[2JAAAA")
    assert "\x1b" not in message
    pid = pickle.MARK + p_str("storage") + _nested(10) + pickle.TUPLE + pickle.BINPERSID
    _one_line_error(_pth(tmp_path / "pid.pth", pickle.EMPTY_DICT + p_str("w") + pid + pickle.SETITEM),
                    "unsupported persistent id (a tuple of 2 items)")


def test_515_byte_file_with_a_stride_0_tensor_of_2_27_elements(tmp_path):
    # Before: memory +500 MB, copying one 4-byte element 2**27 times.
    path = _tensor_pth(tmp_path / "s0.pth", 1, 0, (2 ** 27,), (0,))
    assert path.stat().st_size < 1024
    assert _peak_mib(lambda: read_state_dict(path)) < 8
    _one_line_error(path, "its tensors would need 512.0 MiB of memory, more than 8x the file's", UnsafePickleError)


def _deflated_zeros(path: Path, numel: int, record_bytes: int, size, stride) -> Path:
    """A storage record of ``record_bytes`` zeros, deflated (a few KB per MiB) to a small file."""
    write_pth(path, {"w": ("0", numel, 0, size, stride)}, {}, wrap=False)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("archive/data/0", "w", force_zip64=True) as f:
            for _ in range(record_bytes >> 20):
                f.write(bytes(1 << 20))
    return path


def test_inflating_record_is_checked_before_it_is_read(tmp_path):
    # Before: a 522 KB zip whose record inflated to 512 MiB before any size check.
    whole = _deflated_zeros(tmp_path / "whole.pth", 2 ** 24, 64 << 20, (2 ** 24,), (1,))
    assert whole.stat().st_size < 200_000
    assert _peak_mib(lambda: read_state_dict(whole)) < 8
    _one_line_error(whole, "its tensors would need 128.0 MiB of memory", UnsafePickleError)
    short = _deflated_zeros(tmp_path / "short.pth", 1, 64 << 20, (1,), (1,))
    _one_line_error(short, "storage record 'archive/data/0' holds 67108864 bytes, the pickle declares 1 x "
                           "FloatStorage (4 bytes)")
    # A tensor using one element of a large storage reads only that element.
    one = _deflated_zeros(tmp_path / "one.pth", 2 ** 24, 64 << 20, (1,), (1,))
    assert _peak_mib(lambda: read_state_dict(one)) < 8
    np.testing.assert_array_equal(read_state_dict(one)["w"], np.zeros(1, np.float32))


def test_byteorder_record_must_be_short(tmp_path):
    write_zip(tmp_path / "bo.pth", PROTO + pickle.EMPTY_DICT + pickle.STOP, {}, byteorder="little" * 1000)
    _one_line_error(tmp_path / "bo.pth", "the byteorder record is 6000 bytes, expected 'little' or 'big'")


def test_integer_storages_keep_their_dtype_in_native_order(tmp_path):
    x = np.arange(-3, 3, dtype=np.int64)
    write_pth(tmp_path / "i.pth", {"n": ("0", 6, 0, (2, 3), (3, 1))}, {"0": x.astype(">i8").tobytes()},
              storage_type="LongStorage", byteorder="big", wrap=False)
    got = read_state_dict(tmp_path / "i.pth")["n"]
    assert got.dtype == np.dtype("=i8")
    np.testing.assert_array_equal(got, x.reshape(2, 3))


def test_a_crafted_file_leaves_the_model_untouched(tmp_path):
    from src.io.checkpoint import load_weights  # pylint: disable=import-outside-toplevel
    from src.models import create_model  # pylint: disable=import-outside-toplevel

    model = create_model("deit_tiny_patch16_224", num_classes=3, img_size=32, patch_size=8, embed_dim=48, depth=1,
                         num_heads=3)
    before = {name: p.asnumpy().copy() for name, p in model.parameters_and_names()}
    with pytest.raises(ValueError):
        load_weights(model, _tensor_pth(tmp_path / "s0.pth", 1, 0, (2 ** 27,), (0,)))
    for name, p in model.parameters_and_names():
        np.testing.assert_array_equal(p.asnumpy(), before[name])

