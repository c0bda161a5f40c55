"""Preemption duty: after a stop signal or past the time budget, the run saves and stops with exit code 75.

Last in the list: the stop comes after every other duty of the step. It decides identically on every rank.
"""

from __future__ import annotations

from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.preemption import PREEMPTED_EXIT_CODE, StopWatch


def save_and_stop(trainer, reason: str) -> None:
    """Before the last step only: the last step ends the run anyway."""
    if not trainer.is_last_step:
        trainer.save()
        trainer.stop(reason, PREEMPTED_EXIT_CODE)


class Preemption(Callback):
    def __init__(self, watch: StopWatch):
        self.watch = watch

    def post_step(self, trainer, outcome) -> None:
        reason = self.watch.reason()  # collective: every rank, every step
        if reason is not None:
            save_and_stop(trainer, reason)

    def close(self, trainer) -> None:
        self.watch.restore()
