"""Metrics duty: every `logging.interval` steps (and the first and last) one console line, a metrics.jsonl row, TensorBoard scalars.

It measures nothing the step did not: it turns the step's outcome into StepMetrics for the writer.
"""

from __future__ import annotations

import time

from megatron_sota.model.param_count import train_flops_per_token
from megatron_sota.runtime.gpus import peak_flops_per_device
from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.metrics import MetricsWriter, StepMetrics, memory_gib


class MetricsLog(Callback):
    def __init__(self, writer: MetricsWriter, interval: int):
        self.writer = writer
        self.interval = interval

    def pre_train(self, trainer) -> None:
        state, t = trainer.state, trainer.state.job.train
        self.tokens_per_step = state.objective.tokens_per_step(state.job)
        self.flops_per_step = train_flops_per_token(state.job.model, state.inputs.padded_vocab, t.seq_length) * self.tokens_per_step
        self.peak = peak_flops_per_device(state.session.device)
        self.start = time.perf_counter()

    def post_step(self, trainer, outcome) -> None:
        step, first = outcome.step, trainer.summary.first_step
        if not (step == first or step % self.interval == 0 or trainer.is_last_step):
            return
        state, result, elapsed = trainer.state, outcome.result, outcome.seconds
        done = step - first + 1
        self.writer.log_train(
            StepMetrics(
                step=step,
                loss=result.loss,
                lr=state.scheduler.get_lr(state.optimizer.param_groups[0]),
                grad_norm=result.grad_norm,
                tokens_per_s=self.tokens_per_step / elapsed,
                step_time_s=elapsed,
                consumed_samples=trainer.progress().consumed_samples,
                mfu=(self.flops_per_step / elapsed / state.layout.world_size / self.peak) if self.peak else None,
                memory_gib=memory_gib(state.session.device),
                loss_scale=state.optimizer.get_loss_scale().item() if state.config.fp16 else None,
                skipped=result.skipped,
                eta_s=(time.perf_counter() - self.start) / done * (trainer.iters - step),
                metrics=result.metrics,
            )
        )

    def close(self, trainer) -> None:
        self.writer.close()
