"""In-loop evaluation: runs `eval.tasks` on the weights being trained every `eval.interval` steps.

It scores through the training model chunks at the run's own TP/PP/DP layout (no export, no
reload), with the same task code as tools/evaluate.py. It reports values and threshold breaches; whether a
breach stops the run (eval.stop_on_threshold) is the callback's decision (callbacks/evaluation.py).
"""

from __future__ import annotations

import time
from typing import Dict, List

import torch

from megatron_sota.config.evaluation import EvalConfig
from megatron_sota.evaluation.eval_models import from_training_models
from megatron_sota.evaluation.report import check_thresholds
from megatron_sota.evaluation.runner import evaluate
from megatron_sota.evaluation.task_spec import load_task


class InLoopEvaluator:
    def __init__(self, cfg: EvalConfig, models: list, tokenizer, max_length: int, device: torch.device):
        self.cfg = cfg
        enabled = bool(cfg.tasks) and cfg.interval > 0
        self.specs = [load_task(name) for name in cfg.tasks] if enabled else []
        self.model = from_training_models(models, tokenizer, cfg.micro_batch_size, max_length, device) if enabled else None

    def due(self, step: int, last: bool) -> bool:
        return bool(self.specs) and (step % self.cfg.interval == 0 or last)

    def run(self) -> tuple[Dict[str, float], List[str], float]:
        """({"<task>/<metric>": value}, threshold breaches, seconds), the same on every rank."""
        start = time.perf_counter()
        rows = []
        for spec in self.specs:
            rows.extend(evaluate(spec, self.model, self.cfg.limit))
        breaches = check_thresholds(rows, {spec.name: spec for spec in self.specs})
        return {f"{row.task}/{row.metric}": row.value for row in rows}, breaches, time.perf_counter() - start
