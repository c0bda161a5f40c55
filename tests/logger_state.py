"""Puts the package's and megatron-core's loggers back as they were after a test or a command changed them.

Only the console set-up is restored (our ConsoleHandlers, level, propagate): handlers others attach
meanwhile (pytest attaches its capture handlers to non-propagating loggers per test phase) are left alone.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from megatron_sota.runtime.log import MEGATRON_LOGGER, PACKAGE_LOGGER, ConsoleHandler


@contextlib.contextmanager
def loggers_kept(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names or (PACKAGE_LOGGER, MEGATRON_LOGGER)]
    saved = [([h for h in lg.handlers if isinstance(h, ConsoleHandler)], lg.level, lg.propagate) for lg in loggers]
    try:
        yield
    finally:
        for logger, (consoles, level, propagate) in zip(loggers, saved):
            for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler) and h not in consoles]:
                logger.removeHandler(handler)
            for handler in consoles:
                if handler not in logger.handlers:
                    logger.addHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
