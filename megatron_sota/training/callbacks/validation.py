"""Validation duty: every `train.eval_interval` steps (and the last) the token-weighted loss on the validation split.

It reads the same validation batches every time and never updates the model.
"""

from __future__ import annotations

from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.metrics import MetricsWriter
from megatron_sota.training.state import TrainingState
from megatron_sota.training.step import eval_step, next_token_loss


def validation_loss(state: TrainingState) -> float:
    """Token-weighted mean loss over the first `train.eval_iters` global batches of the validation split."""
    t = state.job.train
    iterators = state.valid_iterators()
    objective = next_token_loss(state.session.device, state.document_eod)
    total, weight = 0.0, 0
    for _ in range(t.eval_iters):
        result = eval_step(
            state.models, iterators, state.layout.num_microbatches,
            t.micro_batch_size, t.seq_length, state.session.device, objective,
        )
        total += result.loss * result.num_tokens
        weight += result.num_tokens
    return total / max(weight, 1)


class Validation(Callback):
    def __init__(self, writer: MetricsWriter, interval: int):
        self.writer = writer
        self.interval = interval

    def post_step(self, trainer, outcome) -> None:
        if trainer.state.valid_dataset is None or self.interval <= 0:
            return
        if outcome.step % self.interval == 0 or trainer.is_last_step:
            loss = validation_loss(trainer.state)
            self.writer.log_validation(outcome.step, loss)
            trainer.summary.val_losses.append(loss)
