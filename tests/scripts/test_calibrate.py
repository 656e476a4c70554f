"""calibrate.py end to end: the table, the JSON and the pasteable block; bad input is one line, exit 1 and no
file written."""
import json

import pytest

from ..conftest import ROOT
from ..run_scripts import run_script
from ..unit.test_sweep import DEMO_CONFIG, TINY, tiny_setup

SCRIPT = ROOT / "calibrate.py"


def _args(ckpt, data, out, *extra):
    return ["--config", DEMO_CONFIG, "--set", *TINY, "--ckpt", ckpt, "--data", data, "--out", out,
            "--mode", "pynative", *extra]


def test_calibrate_prints_the_table_and_writes_every_row(tmp_path, capsys):
    _, ckpt, data = tiny_setup(tmp_path)
    out = tmp_path / "out" / "calib.json"
    code, stdout, err = run_script(SCRIPT, _args(ckpt, data, out, "--thresholds", "1e9", "0", "6.6e-4"), capsys)
    assert code == 0, err
    report = json.loads(out.read_text())
    assert [r["threshold"] for r in report["rows"]] == [0.0, 6.6e-4, 1e9]
    assert report["num_images"] == 9 and report["config"] == str(DEMO_CONFIG)
    assert "agreement %" in stdout and "top-1 %" in stdout and "chosen (*): threshold" in stdout
    block = stdout[stdout.index("ppt:\n"):].splitlines()
    assert block[1:5] == ["  enabled: true", "  policy: ppt", "  r: 4", "  layers: [1, 2]"]


@pytest.mark.parametrize("case, extra, line", [
    ("unreadable", (), "none of its 1 image files could be read"),
    ("target", ("--target", "0.1"), "is below the minimum reachable with PP layers [1, 2]"),
    ("negative", ("--thresholds", "0", "-1e-4"), "--thresholds: expected score variances >= 0, got -0.0001"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case, extra, line):
    _, ckpt, data = tiny_setup(tmp_path)
    if case == "unreadable":
        data = tmp_path / "broken"
        data.mkdir()
        (data / "x.jpg").write_bytes(b"no jpeg")
    out = tmp_path / "calib.json"
    code, stdout, err = run_script(SCRIPT, _args(ckpt, str(data), out, *extra), capsys)
    assert code == 1 and len(err) == 1 and err[0].startswith("calibrate.py: error: ") and line in err[0], err
    assert not out.exists() and list(tmp_path.glob(".calib.json*")) == []
