"""Runs a post-training job in-process: the objective `posttrain.objective` names, in pretraining's trainer.

Tests and notebooks call posttrain() directly; the entry point (posttrain/__main__.py) adds only Hydra.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from megatron_sota.config.job import JobConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.chat_template import template_text
from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.loop import TrainSummary
from megatron_sota.training.objective import Objective
from megatron_sota.training.trainer import pretrain


def build_objective(job: JobConfig) -> Objective:
    """The plug-in of `posttrain.objective` (training/objective.py), built from the job's config."""
    if job.posttrain is None:
        raise MegatronSotaError("no posttrain group: choose one (posttrain=sft, rm, dpo, ppo or grpo)")
    name = job.posttrain.objective
    if name == "sft":
        from megatron_sota.posttrain.sft import SFTObjective

        return SFTObjective(job.posttrain)
    if name == "rm":
        from megatron_sota.posttrain.reward import RewardObjective

        return RewardObjective(job.posttrain)
    if name == "dpo":
        from megatron_sota.posttrain.dpo import DPOObjective

        return DPOObjective(job.posttrain)
    if name in ("ppo", "grpo"):
        from megatron_sota.posttrain.rl import RLObjective

        return RLObjective(job.posttrain)
    raise MegatronSotaError(f"posttrain.objective={name} is not available (available: sft, rm, dpo, ppo, grpo)")


def posttrain(job: JobConfig, run_dir: str, command_line: str = "", callbacks: Sequence[Callback] = ()) -> TrainSummary:
    """pretrain() with the job's post-training objective: same run directory, checkpoints, resume and evaluation.

    The chat template's text is recorded in the job (posttrain.chat_template_text), hence in config.yaml and
    every checkpoint, for conversion/export.py to ship with the model."""
    objective = build_objective(job)
    text = template_text(job.posttrain.chat_template)
    job = dataclasses.replace(job, posttrain=dataclasses.replace(job.posttrain, chat_template_text=text))
    return pretrain(job, run_dir, command_line, callbacks, objective=objective)
