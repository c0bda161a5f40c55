"""While a test SLURM cluster runs, SIGTERM (`timeout 900 pytest ...`) interrupts pytest like Ctrl-C, so the
fixture still stops the daemons. Only in this process and only inside the block: forked children keep the old handler.

A session-long handler was inherited by multiprocessing.Pool workers forked in later tests, and one such worker
outlived Pool.terminate(), leaving the suite joining it forever; hence the fork hooks and the restore on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

_INSTALLED: list[tuple[tuple[Callable, ...], object]] = []
"""(our handlers, the handler they replaced) of each active block, outermost first."""
_FORK = threading.local()


# A child starts with the parent's handler and may run for a while before any hook of its own (a loaded machine
# schedules it late): Pool.terminate() then reached a worker still holding our handler, whose KeyboardInterrupt was
# swallowed, and the worker never exited. So SIGTERM stays blocked across the fork until the child has the old
# handler back; a SIGTERM sent meanwhile waits and then takes its ordinary course, in parent and child.
def _before_fork() -> None:
    _FORK.blocked = bool(_INSTALLED) and signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})


def _after_fork_in_parent() -> None:
    if getattr(_FORK, "blocked", False):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _after_fork_in_child() -> None:
    if _INSTALLED and signal.getsignal(signal.SIGTERM) in [h for handlers, _ in _INSTALLED for h in handlers]:
        signal.signal(signal.SIGTERM, _INSTALLED[0][1])
    _INSTALLED.clear()
    _after_fork_in_parent()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def interrupted_by_sigterm(stop: Callable[[], None]) -> Iterator[None]:
    """Inside the block a SIGTERM raises KeyboardInterrupt here (a second one kills at once); on the way out
    ``stop()`` runs with SIGTERM held back, then the previous handler returns and a held-back SIGTERM takes its
    course. A process whose SIGTERM is already handled (not SIG_DFL) keeps its handler."""
    previous = signal.getsignal(signal.SIGTERM)
    deferred: list[int] = []

    def on_sigterm(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt("SIGTERM")

    def defer(signum: int, frame: object) -> None:
        deferred.append(signum)

    entry = ((on_sigterm, defer), previous)
    if previous == signal.SIG_DFL:
        _INSTALLED.append(entry)
        signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, defer)
        try:
            stop()
        finally:
            if signal.getsignal(signal.SIGTERM) in (on_sigterm, defer):
                signal.signal(signal.SIGTERM, previous)
            if entry in _INSTALLED:
                _INSTALLED.remove(entry)
            if deferred:
                os.kill(os.getpid(), signal.SIGTERM)
