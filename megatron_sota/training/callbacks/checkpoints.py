"""Checkpoint duty: a save every `checkpoint.interval` steps and after the last one (`checkpoint.save_at_end`).

Saving itself is the Trainer's (once per step, whoever asks); this decides when, and completes background saves.
"""

from __future__ import annotations

from megatron_sota.training.callbacks.base import Callback


class PeriodicCheckpoint(Callback):
    def __init__(self, interval: int, save_at_end: bool):
        self.interval = interval
        self.save_at_end = save_at_end

    def post_step(self, trainer, outcome) -> None:
        trainer.checkpoints.poll()
        if (self.interval > 0 and outcome.step % self.interval == 0) or (self.save_at_end and trainer.is_last_step):
            trainer.save()
