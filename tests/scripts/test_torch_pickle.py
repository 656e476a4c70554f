"""Crafted PyTorch checkpoints through the scripts: a pickle nested 3 million deep ends in one line instead of
a crash, and convert.py refuses crafted files writing nothing."""

import os
import pickle
import struct
import subprocess
import sys
import time

import pytest

from src.io import torch_pickle

from ..conftest import ROOT
from ..run_scripts import TINY_CONFIG, run_script
from ..unit.test_torch_pickle import PROTO, _deflated_zeros, _pth, _tensor_pth  # noqa: F401 (fixtures, helpers)


@pytest.mark.parametrize("script", ["convert.py", "eval.py"])
def test_tuple_key_nested_3_million_deep_is_refused_without_a_crash(tmp_path, script):
    # Before: SIGSEGV while hashing the dict key (CPython's tuple hash recurses without a guard).
    path = _pth(tmp_path / "deep.pth", pickle.EMPTY_DICT + pickle.EMPTY_TUPLE + pickle.TUPLE1 * 3_000_000
                + pickle.NONE + pickle.SETITEM)
    assert path.stat().st_size > 3_000_000
    if script == "convert.py":
        args = [path, tmp_path / "out.ckpt"]
    else:
        (tmp_path / "tiny.yaml").write_text(TINY_CONFIG.replace("DATA", str(tmp_path)))
        args = ["--config", tmp_path / "tiny.yaml", "--ckpt_file", path, "--out", tmp_path / "out.json"]
    start = time.monotonic()
    result = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        f"{script}: error: {path}: the pickle nests containers more than {torch_pickle.MAX_DEPTH} deep"]
    assert time.monotonic() - start < 60
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == (["deep.pth", "tiny.yaml"] if script == "eval.py" else ["deep.pth"])


@pytest.mark.parametrize("case", ["stride0", "size2_64", "memo", "inflating"])
def test_convert_refuses_crafted_files_in_one_line_and_writes_nothing(tmp_path, capsys, case):
    src = tmp_path / f"{case}.pth"
    if case == "stride0":
        _tensor_pth(src, 1, 0, (2 ** 27,), (0,))
    elif case == "size2_64":
        _tensor_pth(src, 1, 0, (2 ** 64,), (0,))
    elif case == "memo":
        _pth(src, pickle.NONE + pickle.LONG_BINPUT + struct.pack("<I", 2 ** 26))
    else:
        _deflated_zeros(src, 2 ** 24, 64 << 20, (2 ** 24,), (1,))
    code, out, err = run_script(ROOT / "convert.py", [src, tmp_path / "out.ckpt"], capsys)
    assert (code, out) == (1, "") and len(err) == 1 and err[0].startswith(f"convert.py: error: {src}: "), err
    assert os.listdir(tmp_path) == [src.name]

