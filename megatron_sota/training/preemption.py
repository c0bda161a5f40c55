"""Turns SLURM's stop signals (SIGTERM, SIGUSR1) and a wall-clock budget into a clean, agreed stop.

The handler only sets a flag; ranks agree on stopping through one all-reduce per step, so every
rank saves the same iteration. It must not save or exit by itself.
"""

from __future__ import annotations

import signal
import time
from typing import Optional

import torch
import torch.distributed as dist

# "Temporary failure, try again" (sysexits EX_TEMPFAIL): the run saved and wants to be requeued.
PREEMPTED_EXIT_CODE = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopWatch:
    """Decides, identically on every rank, whether the run must save and stop after this step."""

    def __init__(self, catch_signals: bool, exit_duration_minutes: Optional[float], device: torch.device):
        self.device = device
        self.deadline = time.monotonic() + exit_duration_minutes * 60 if exit_duration_minutes else None
        self.received: Optional[int] = None
        self._previous = {}
        if catch_signals:
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.received = signum

    def reason(self) -> Optional[str]:
        """'signal' or 'time budget' when any rank says so, else None (collective: call on all ranks)."""
        local = 0
        if self.received is not None:
            local = 2
        elif self.deadline is not None and time.monotonic() >= self.deadline:
            local = 1
        flag = torch.tensor([local], dtype=torch.int32, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return {0: None, 1: "time budget (train.exit_duration_minutes)", 2: "stop signal"}[int(flag.item())]

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
