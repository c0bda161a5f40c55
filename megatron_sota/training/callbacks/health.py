"""Health duty: a skipped non-finite step is reported and counted (too many in a row stop the run), a loss spike reported.

It only reports and raises TrainingDiverged; what is skipped is the step's decision.
"""

from __future__ import annotations

import logging

from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.health import LossHealth

logger = logging.getLogger(__name__)


class LossHealthCheck(Callback):
    def __init__(self, max_skipped_steps: int, spike_factor: float):
        self.health = LossHealth(max_skipped_steps, spike_factor)

    def post_step(self, trainer, outcome) -> None:
        result = outcome.result
        if result.skip_reason == "non-finite":
            message = self.health.record_skip(outcome.step, result.loss, result.grad_norm, trainer.checkpoints.last_complete)
        elif not result.skipped:
            message = self.health.record_update(outcome.step, result.loss)
        else:
            return  # fp16 overflow: the loss scaler's business, shown on the metrics line
        # The same on every rank: said once.
        if message and trainer.is_rank0:
            logger.warning(message)
