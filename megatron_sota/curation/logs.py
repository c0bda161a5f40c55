"""Keeps datatrove's per-task logging in each stage's logs/ folder and only its warnings on the console.

Every task still writes its full log file (logs/<stage>/logs/task_<rank>.log); it must not hide errors.
"""

from __future__ import annotations

import contextlib
import os
import sys


def quiet_datatrove(level: str = "WARNING") -> None:
    from loguru import logger

    logger.remove()  # the default sink prints every task's INFO lines to the console
    logger.add(sys.stderr, level=level)


@contextlib.contextmanager
def console_to_file(path: str):
    """Sends this process's stdout/stderr (file descriptors, so worker processes too) to ``path`` meanwhile.

    datatrove prints every task's log and stats to the console; they stay complete in the file.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def tail(path: str, lines: int = 30) -> str:
    with open(path, errors="replace") as handle:
        return "".join(handle.readlines()[-lines:])
