"""What a resume carries over from its checkpoint, decided before any process group exists.

The data position (consumed samples) continues whatever the batch size now is; a changed LR
schedule is refused or resolved as `scheduler.changed_at_resume` says. It must not load tensors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Dict, List, Optional

from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler
from omegaconf import OmegaConf

from megatron_sota.checkpointing.manager import Progress, read_common
from megatron_sota.config.job import JobConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.training.optimization import schedule_settings

logger = logging.getLogger(__name__)

# The schedule values megatron-core's scheduler restores from a checkpoint, with what sets each here.
_RESTORED = (
    ("max_lr", "peak LR (optimizer.lr)"),
    ("min_lr", "LR floor (optimizer.lr * scheduler.min_lr_ratio)"),
    ("lr_warmup_steps", "warm-up iterations (scheduler.warmup_iters)"),
    ("lr_decay_steps", "iteration the decay ends (warm-up + scheduler.decay_iters, or train.iters when null)"),
    ("lr_decay_style", "decay style (scheduler.name)"),
    ("start_wd", "weight decay (optimizer.weight_decay)"),
    ("end_wd", "final weight decay (optimizer.weight_decay)"),
    ("wd_incr_style", "weight-decay schedule"),
    ("wd_incr_steps", "iteration the weight-decay schedule ends"),
)


@dataclass(frozen=True)
class ResumePoint:
    """A checkpoint to resume from, read before the model is built."""

    checkpoint_dir: str
    progress: Progress
    follow_checkpoint_schedule: bool = True
    """False when scheduler.changed_at_resume=config and the schedules differ."""


def schedule_changes(saved: Dict[str, Any], configured: Dict[str, Any]) -> List[str]:
    """The restored schedule values that differ, one line each, checkpoint's then config's."""
    changes = []
    for key, meaning in _RESTORED:
        if key not in saved or saved[key] == configured[key]:
            continue
        if key == "wd_incr_steps" and saved.get("wd_incr_style") == configured["wd_incr_style"] == "constant":
            continue  # a constant weight decay has no end
        changes.append(f"{meaning}: checkpoint {saved[key]}, config {configured[key]}")
    return changes


def lr_at(settings: Dict[str, Any], step: int) -> float:
    """The learning rate megatron-core's scheduler gives after `step` optimizer steps under `settings`."""
    scheduler = OptimizerParamScheduler(SimpleNamespace(param_groups=[]), **settings)
    scheduler.num_steps = step
    return scheduler.get_lr({})


def _saved_batch_size(common: Dict[str, Any]) -> Optional[int]:
    try:
        return int(OmegaConf.create(common.get("config_yaml") or "{}").train.global_batch_size)
    except Exception:
        return None  # a checkpoint made elsewhere (tools/convert_checkpoint.py import) records no config


def _check_schedule(job: JobConfig, checkpoint_dir: str, saved: Dict[str, Any], step: int) -> bool:
    """True to keep the checkpoint's schedule; refuses a change when scheduler.changed_at_resume=refuse."""
    configured = schedule_settings(job.optimizer, job.scheduler, job.train.iters)
    changes = schedule_changes(saved, configured)
    if not changes:
        return True
    restored = {**configured, **{key: saved[key] for key, _ in _RESTORED if key in saved}}
    saved_steps = saved.get("num_steps", step)
    choice = job.scheduler.changed_at_resume
    listed = "\n  - ".join(changes)
    next_lrs = (
        f"the next step's LR is {lr_at(restored, saved_steps):.3e} on the checkpoint's schedule and "
        f"{lr_at(configured, saved_steps):.3e} on this config's"
    )
    if choice == "refuse":
        raise MegatronSotaError(
            f"{checkpoint_dir} (iteration {step}) was trained on another LR schedule than this config gives:\n"
            f"  - {listed}\n{next_lrs}. Set scheduler.changed_at_resume=checkpoint to keep the checkpoint's schedule "
            "(a finished schedule stays at its floor), or scheduler.changed_at_resume=config to follow this config "
            f"from step {step + 1} on"
        )
    which = "the checkpoint's schedule" if choice == "checkpoint" else "this config's schedule"
    logger.warning(
        f"{checkpoint_dir}: the LR schedule differs from this config's; following {which} "
        f"(scheduler.changed_at_resume={choice}):\n  - {listed}\n{next_lrs}"
    )
    return choice == "checkpoint"


def plan_resume(job: JobConfig, checkpoint_dir: str) -> ResumePoint:
    """Reads `checkpoint_dir`'s progress and schedule; refuses what cannot continue and says what changes."""
    common = read_common(checkpoint_dir)
    progress = Progress(**common["progress"])
    t = job.train
    if progress.iteration > t.iters:
        raise MegatronSotaError(
            f"{checkpoint_dir} is at iteration {progress.iteration}, past train.iters={t.iters}: set train.iters "
            f"above {progress.iteration} to train on, or start a new run in another directory"
        )
    saved_batch = _saved_batch_size(common)
    if saved_batch is not None and saved_batch != t.global_batch_size:
        logger.warning(
            f"train.global_batch_size is {t.global_batch_size}, the checkpoint's was {saved_batch}: training goes on "
            f"from sample {progress.consumed_samples} of the data order, {t.global_batch_size} samples per step"
        )
    follow = True
    if job.checkpoint.load_optimizer and isinstance(common.get("scheduler"), dict):
        follow = _check_schedule(job, checkpoint_dir, common["scheduler"], progress.iteration)
    return ResumePoint(checkpoint_dir, progress, follow)
