"""src.analysis.benchmark on a tiny PPT model: the keep_first policy as the timing baseline, argument errors,
fixed threads."""
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from src.analysis.benchmark import benchmark
from src.models import create_model

from ..conftest import ROOT

TINY = dict(name="deit_tiny_patch16_224", num_classes=5, img_size=32, patch_size=8, embed_dim=48, depth=3,
            num_heads=3)


PPT = {"r": 4, "layers": [1], "threshold": 1e9, "prop_attn": True}


def test_keep_first_policy_is_the_timing_baseline(graph_mode):
    """The plain slice is a registered policy: compiled into graph mode, it keeps the first N - r tokens."""
    ms.set_seed(0)
    ppt_model = create_model(**TINY, ppt=PPT)
    sliced = create_model(**TINY, ppt=dict(PPT, policy="keep_first"))
    for p, q in zip(ppt_model.get_parameters(), sliced.get_parameters()):
        q.set_data(p.data)
    ppt_model.set_train(False)
    sliced.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32))
    y_slice, y_ppt = sliced(x).asnumpy(), ppt_model(x).asnumpy()
    # By hand: the same blocks, with block 1's MLP on its first 13 of 17 tokens.
    h = sliced._embed(x)
    size = ms.ops.ones((2, 17, 1), ms.float32)
    for i, blk in enumerate(sliced.blocks):
        if i == 1:
            out = blk.attn(blk.norm1(h), size)[0]
            h = h + out
            h = h[:, :13]
            h = h + blk.mlp(blk.norm2(h))
        else:
            h = blk(h, size[:, :h.shape[1]])[0]
    expected = sliced.forward_head(sliced.norm(h)).asnumpy()
    np.testing.assert_allclose(y_slice, expected, rtol=1e-4, atol=1e-5)
    assert np.abs(y_ppt - y_slice).max() > 1e-3


@pytest.mark.parametrize("kwargs, message", [
    (dict(model_kwargs=dict(TINY, ppt=None), batch_sizes=[2]), "ppt.enabled: false"),
    (dict(model_kwargs=dict(TINY, ppt=PPT), batch_sizes=[0]), "batch sizes must be ints >= 1"),
    (dict(model_kwargs=dict(TINY, ppt=PPT), batch_sizes=[2], warmup=0), "warmup, runs and latency runs must be >= 1"),
    (dict(model_kwargs=dict(TINY, ppt=PPT), batch_sizes=[2], backends=["tensorrt"]), "backends must be some of"),
])
def test_benchmark_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        benchmark(**kwargs, log=None)


def test_every_timed_call_follows_a_settling_pause(monkeypatch):
    """Each timed call starts after SETTLE_SECONDS of idle time (the previous model's spinning threads would
    otherwise slow it), the pause is outside the timed span, and rounds alternate their order."""
    from src.analysis import benchmark as bench

    events = []
    monkeypatch.setattr(bench.time, "sleep", lambda s: events.append(("sleep", s)))

    def call(name):
        def run():
            events.append(("call", name))
            return np.zeros(1)
        return run

    times = bench._time_batch({("onnxruntime", "baseline"): call("b"), ("onnxruntime", "ppt"): call("p")},
                              {"onnxruntime": call("roof")}, 1, warmup=1, runs=2, log=None)
    timed = events[3:]  # after the three untimed warm-up calls
    one_round = [("sleep", bench.SETTLE_SECONDS), ("call", "b"), ("sleep", bench.SETTLE_SECONDS), ("call", "p"),
                 ("sleep", bench.SETTLE_SECONDS), ("call", "roof")]
    reverse = [e for pair in reversed(list(zip(one_round[::2], one_round[1::2]))) for e in pair]
    assert timed == one_round + reverse  # every other round in reverse order: drift within a round favours none
    assert all(len(t["runs_seconds"]) == 2 for t in times.values())
    assert bench.SETTLE_SECONDS > 0


def test_cpu_threads_are_fixed_once_per_process():
    """MindSpore takes its CPU thread count once: the same value again is accepted, another one is refused in
    one line, and a bad value before anything is set."""
    script = (
        "from src.timing import fix_cpu_threads\n"
        "for bad in (0, 1.5, True):\n"
        "    try:\n"
        "        fix_cpu_threads(bad)\n"
        "    except ValueError as e:\n"
        "        assert 'expected an int >= 1' in str(e), e\n"
        "    else:\n"
        "        raise AssertionError(bad)\n"
        "assert fix_cpu_threads(2) == 2 and fix_cpu_threads(2) == 2\n"
        "try:\n"
        "    fix_cpu_threads(1)\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("CPU threads: MindSpore already runs on 2 threads in this process; "
                                   "it cannot change to 1")
