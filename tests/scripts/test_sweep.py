"""benchmark.py --sweep in graph mode: flags parsed next to the common ones, no dataset, random weights."""

import json
from pathlib import Path

import mindspore as ms
import pytest

import benchmark as benchmark_script

from ..unit.test_sweep import DEMO_CONFIG, ROOT, TINY  # noqa: F401 (fixtures, helpers)


def test_sweep_from_args_in_graph_mode(tmp_path, capsys):
    """benchmark.py --sweep: flags parsed next to the common ones, graph mode, no dataset, random weights."""
    parser = benchmark_script.build_parser()
    prefix = tmp_path / "g"
    args = parser.parse_args(["--config", str(DEMO_CONFIG), "--set", *TINY, "--sweep", "4",
                              "--sweep-layers", "1,2", "--sweep-runs", "1", "--sweep-batch-size", "2",
                              "--sweep-out", str(prefix)])
    try:
        rows = benchmark_script.run_sweep_from_args(args)
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert [r["name"] for r in rows] == ["baseline", "r=4 layers=[1, 2] thr=0.00066"]
    assert rows[1]["top1"] is None and json.loads(Path(f"{prefix}.json").read_text())["mode"] == "graph"
    out = capsys.readouterr().out
    assert "top-1 not measured" in out and f"{prefix}.png" in out
    bad = parser.parse_args(["--config", str(DEMO_CONFIG), "--mode", "pynative", "--sweep", "4"])
    with pytest.raises(ValueError, match="graph-mode"):
        benchmark_script.run_sweep_from_args(bad)

