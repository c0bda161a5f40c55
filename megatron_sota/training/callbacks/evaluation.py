"""In-loop evaluation duty: `eval.tasks` on the weights being trained every `eval.interval` steps (and the last).

It reports values and threshold breaches; with `eval.stop_on_threshold` a breach is a release gate: the step's
checkpoint is saved and the run stops with exit code 3 (BELOW_THRESHOLD_EXIT_CODE), else it is only a warning.
"""

from __future__ import annotations

import logging

from megatron_sota.evaluation.report import BELOW_THRESHOLD_EXIT_CODE
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
        values, breaches, seconds = self.evaluator.run()
        self.writer.log_eval(outcome.step, values, seconds)
        trainer.summary.eval_metrics[outcome.step] = values
        gate = self.evaluator.cfg.stop_on_threshold and breaches
        if trainer.is_rank0:  # every rank has the same values: logged once
            for breach in breaches:
                logger.log(logging.ERROR if gate else logging.WARNING, "%s", breach)
        if gate:  # every rank decides alike (same values), so the save's collectives line up
            reason = f"eval.stop_on_threshold: {len(breaches)} threshold(s) breached at step {outcome.step} ({breaches[0]})"
            if trainer.is_rank0:
                logger.error(f"{reason}: saving a checkpoint and stopping with exit code {BELOW_THRESHOLD_EXIT_CODE}")
            trainer.save()
            trainer.stop(reason, BELOW_THRESHOLD_EXIT_CODE)
