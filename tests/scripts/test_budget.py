"""budget.py end to end: the printed ppt: block, one-line failures, and candidates evaluated on data."""

import re
import subprocess
import sys

from ..unit.test_sweep import DEMO_CONFIG, ROOT, TINY, tiny_setup


def _budget(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "budget.py"), "--config", str(DEMO_CONFIG), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_budget_script_prints_a_pasteable_block_and_fails_in_one_line():
    done = _budget("--target", "0.7", "--set", *TINY)
    assert done.returncode == 0, done.stderr
    block = done.stdout[done.stdout.index("ppt:\n"):]
    assert block.splitlines()[1:] == ["  enabled: true", "  policy: ppt", "  r: [6, 4]", "  layers: [1, 2]",
                                      "  threshold: 0.00066", "  prop_attn: true"]
    impossible = _budget("--target", "0.1", "--layers", "3", "--set", *TINY)
    assert impossible.returncode == 1 and len(impossible.stderr.strip().splitlines()) == 1
    assert "minimum reachable with PP layers [3]" in impossible.stderr


def test_budget_script_evaluates_candidates_on_data(tmp_path):
    _, ckpt, data = tiny_setup(tmp_path)
    done = _budget("--target", "0.7", "--set", *TINY, "--data", data, "--ckpt_file", ckpt, "--mode", "pynative",
                   "--max-images", "4")
    assert done.returncode == 0, done.stderr
    # one batch of 4 rows of a shuffled, padded pipeline: up to 4 images
    assert re.search(r"top-1 on [1-4] images of .*/val:", done.stdout), done.stdout
    assert "top-1 (%)" in done.stdout and "chosen: " in done.stdout
    no_weights = _budget("--target", "0.7", "--set", *TINY, "--data", data)
    assert no_weights.returncode == 1 and "needs trained weights" in no_weights.stderr

