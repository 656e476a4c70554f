"""MindSpore's own log lines around calls whose failure our caller reports in one line of its own.

MindSpore logs ``[ERROR]``/``[WARNING]`` lines through a Python logger before raising (e.g. when a device is
not available, or a checkpoint cannot be parsed); printed before our message they bury it.
"""
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from mindspore import log as ms_log

__all__ = ["held_mindspore_logs"]


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
