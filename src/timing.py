"""Timing a call the same way everywhere (benchmark, sweep, evaluation): MindSpore outputs are copied to the
host inside the timed span, which waits for the device, so a call's time is its whole cost; numpy outputs (an
onnxruntime session) are already there."""
import time
from collections.abc import Callable
from typing import Any

__all__ = ["timed_call", "time_calls"]


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
