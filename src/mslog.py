"""MindSpore's own log lines around calls whose failure our caller reports in one line of its own, and the one
line of an exception's message such a report quotes (:func:`first_line`).

MindSpore logs ``[ERROR]``/``[WARNING]`` lines through a Python logger before raising (e.g. when a device is
not available, or a checkpoint cannot be parsed); printed before our message they bury it.
"""
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from mindspore import log as ms_log

__all__ = ["held_mindspore_logs", "first_line"]


class _Hold(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def held_mindspore_logs() -> Iterator[None]:
    """Hold MindSpore's log records during the block: printed after it when it succeeds, dropped when it raises
    (the caller's one-line error then says what went wrong)."""
    logger = ms_log._get_logger()  # pylint: disable=protected-access  # the only handle MindSpore 2.10 offers
    saved, hold = logger.handlers[:], _Hold()
    logger.handlers = [hold]
    try:
        yield
    finally:
        logger.handlers = saved
    for record in hold.records:  # reached only without an exception
        logger.handle(record)


def first_line(e: BaseException) -> str:
    """The first non-empty line of an exception's message (MindSpore, onnx and onnxruntime errors carry whole
    stacks), or its type name when it has none: what a one-line error quotes."""
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
