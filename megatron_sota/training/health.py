"""Watches the loss for trouble: counts skipped non-finite steps and flags loss spikes.

It only keeps counts and a running mean; the step decides what to skip, the loop what to do.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Optional

from megatron_sota.errors import MegatronSotaError


class TrainingDiverged(MegatronSotaError):
    """Too many consecutive steps had a non-finite loss or gradient norm."""

    exit_code = 3


class LossHealth:
    def __init__(self, max_skipped_steps: int, spike_factor: float, window: int = 50):
        self.max_skipped = max_skipped_steps
        self.spike_factor = spike_factor
        self.recent: deque[float] = deque(maxlen=window)
        self.consecutive_skips = 0
        self.total_skips = 0

    def record_skip(self, step: int, loss: float, grad_norm: Optional[float], last_checkpoint: Optional[str]) -> str:
        self.consecutive_skips += 1
        self.total_skips += 1
        message = (
            f"step {step}: skipped the update (loss {loss}, grad norm {grad_norm}); "
            f"{self.consecutive_skips} consecutive, {self.total_skips} in total"
        )
        if self.consecutive_skips >= self.max_skipped:
            raise TrainingDiverged(
                f"{message}: stopping after train.max_skipped_steps={self.max_skipped} consecutive "
                f"non-finite steps; last good checkpoint: {last_checkpoint or 'none saved yet'}"
            )
        return message

    def record_update(self, step: int, loss: float) -> Optional[str]:
        """Returns a spike report when the loss jumps above spike_factor x its recent mean."""
        self.consecutive_skips = 0
        report = None
        if self.spike_factor > 0 and len(self.recent) >= 10:
            mean = sum(self.recent) / len(self.recent)
            if loss > self.spike_factor * mean:
                report = f"step {step}: loss spike {loss:.4f} > {self.spike_factor} x recent mean {mean:.4f}"
        if math.isfinite(loss):
            self.recent.append(loss)
        return report
