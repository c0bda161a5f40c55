"""Wall time per phase of a training step, synchronised with the device so GPU work is counted.

The trainer's step takes an optional timer; the benchmark passes one, training runs pass none
and pay nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from typing import Dict, Iterator, Optional

import torch


class PhaseTimer:
    """Accumulates seconds per named phase; each phase starts and ends with a device sync.

    Without the syncs a CUDA phase would only measure the time to queue its kernels.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: Dict[str, float] = defaultdict(float)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[name] += time.perf_counter() - start

    def reset(self) -> None:
        self.seconds.clear()


class TimedIterator:
    """Wraps a data iterator and counts the host time spent waiting for the next batch."""

    def __init__(self, inner: Iterator, seconds: Optional[Dict[str, float]] = None, key: str = "data"):
        self.inner = inner
        self.seconds = seconds if seconds is not None else defaultdict(float)
        self.key = key

    def __iter__(self) -> "TimedIterator":
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.inner)
        finally:
            self.seconds[self.key] = self.seconds.get(self.key, 0.0) + time.perf_counter() - start


def phase(timer: Optional[PhaseTimer], name: str):
    """`timer.phase(name)`, or nothing when no timer is given."""
    return timer.phase(name) if timer is not None else contextlib.nullcontext()
