"""What one of the package's loggers emits during a test, whatever the console set-up: the package's loggers do not
propagate once an entry point has run in the process, and pytest may or may not have attached its capture to them.

It records (level name, message) pairs; it must not change what the logger prints elsewhere.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, List, Tuple


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: List[Tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.levelname, record.getMessage()))


@contextlib.contextmanager
def logged(name: str, level: int = logging.DEBUG) -> Iterator[List[Tuple[str, str]]]:
    """The (level name, message) of every record of logger `name` at `level` or above, while the block runs."""
    logger = logging.getLogger(name)
    handler, previous = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
