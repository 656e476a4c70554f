"""Timing a call the same way everywhere (benchmark, sweep, evaluation): MindSpore outputs are copied to the
host inside the timed span, which waits for the device, so a call's time is its whole cost; numpy outputs (an
onnxruntime session) are already there."""
import os
import time
from collections.abc import Callable
from typing import Any

import mindspore as ms

__all__ = ["timed_call", "time_calls", "usable_cores", "fix_cpu_threads"]


def timed_call(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``fn(*args)`` with its output(s) as numpy arrays, and the seconds the call took."""
    t0 = time.perf_counter()
    out = fn(*args)
    out = tuple(_host(o) for o in out) if isinstance(out, (tuple, list)) else _host(out)
    return out, time.perf_counter() - t0


def time_calls(fn: Callable[..., Any], *args: Any, warmup: int = 1, runs: int = 5) -> list[float]:
    """Seconds of ``runs`` timed calls of ``fn(*args)`` after ``warmup`` untimed ones (in graph mode the first
    call compiles)."""
    if warmup < 0 or runs < 1:
        raise ValueError(f"time_calls: warmup must be >= 0 and runs >= 1, got {warmup} and {runs}")
    for _ in range(warmup):
        timed_call(fn, *args)
    return [timed_call(fn, *args)[1] for _ in range(runs)]


def _host(value: Any) -> Any:
    return value.asnumpy() if hasattr(value, "asnumpy") else value


def usable_cores() -> int:
    """Processors this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


_CPU_THREADS: list[int] = []  # what fix_cpu_threads set: MindSpore takes the setting once per process


def fix_cpu_threads(threads: int) -> int:
    """Run MindSpore's CPU kernels on ``threads`` threads (its own default is not the core count), so that a
    timing states, and repeats with, its thread count. MindSpore accepts this once per process: a second call
    with the same value does nothing, another value is an error."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"CPU threads: expected an int >= 1, got {threads!r}")
    if _CPU_THREADS:
        if _CPU_THREADS[0] != threads:
            raise ValueError(f"CPU threads: MindSpore already runs on {_CPU_THREADS[0]} threads in this process; "
                             f"it cannot change to {threads}")
        return threads
    ms.device_context.cpu.op_tuning.threads_num(threads)
    _CPU_THREADS.append(threads)
    return threads
