"""In-loop evaluation duty: `eval.tasks` on the weights being trained every `eval.interval` steps (and the last).

It reports values and threshold warnings; it never stops training.
"""

from __future__ import annotations

import logging

from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.in_loop_eval import InLoopEvaluator
from megatron_sota.training.metrics import MetricsWriter

logger = logging.getLogger(__name__)


class InLoopEvaluation(Callback):
    def __init__(self, evaluator: InLoopEvaluator, writer: MetricsWriter):
        self.evaluator = evaluator
        self.writer = writer

    def post_step(self, trainer, outcome) -> None:
        if not self.evaluator.due(outcome.step, last=trainer.is_last_step):
            return
        values, warnings, seconds = self.evaluator.run()
        self.writer.log_eval(outcome.step, values, seconds)
        trainer.summary.eval_metrics[outcome.step] = values
        if trainer.is_rank0:  # every rank has the same values: warned once
            for warning in warnings:
                logger.warning(warning)
