"""Validation duty: every `train.eval_interval` steps (and the last) the token-weighted loss on the validation split.

It reads the same validation batches every time and never updates the model.
"""

from __future__ import annotations

from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.metrics import MetricsWriter
from megatron_sota.training.state import TrainingState
from megatron_sota.training.step import eval_step, other_metrics


def validation_metrics(state: TrainingState) -> tuple[float, dict[str, float]]:
    """Token-weighted mean loss over the first `train.eval_iters` global batches of the validation split,
    and each of the objective's other metrics as its sum over those batches by its count."""
    t = state.job.train
    iterators = state.valid_iterators()
    forward_step = state.objective.forward_step(state)
    total, weight = 0.0, 0
    sums: dict[str, tuple[float, float]] = {}
    for _ in range(t.eval_iters):
        result = eval_step(
            state.models, iterators, state.layout.num_microbatches,
            t.micro_batch_size * state.objective.rows_per_sample, t.seq_length, state.session.device, forward_step,
            state.objective.metric_names,
        )
        total += result.loss * result.num_tokens
        weight += result.num_tokens
        for name, (value, count) in result.totals.items():
            before = sums.get(name, (0.0, 0.0))
            sums[name] = (before[0] + value, before[1] + count)
    return total / max(weight, 1), other_metrics(sums)


def validation_loss(state: TrainingState) -> float:
    """validation_metrics' loss."""
    return validation_metrics(state)[0]


class Validation(Callback):
    def __init__(self, writer: MetricsWriter, interval: int):
        self.writer = writer
        self.interval = interval

    def post_step(self, trainer, outcome) -> None:
        if trainer.state.valid_dataset is None or self.interval <= 0:
            return
        if outcome.step % self.interval == 0 or trainer.is_last_step:
            loss, metrics = validation_metrics(trainer.state)
            self.writer.log_validation(outcome.step, loss, metrics, perplexity=trainer.state.objective.token_loss)
            trainer.summary.val_losses.append(loss)
            trainer.summary.val_metrics.append(metrics)
