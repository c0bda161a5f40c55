"""Test hooks that inject faults into a real run, read from MEGATRON_SOTA_FAULTS, added to the Trainer as one callback.

Format: "nan_loss=3,4;kill_during_save=20;preempt_at=10" (steps). Empty by default (no callback);
the faults enter through the Trainer's and the checkpoint manager's public hooks, never through
the production code's arguments.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import FrozenSet, List, Mapping, Optional

from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.callbacks.preemption import save_and_stop
from megatron_sota.training.step import ForwardStep

ENV_VAR = "MEGATRON_SOTA_FAULTS"


@dataclass(frozen=True)
class FaultPlan:
    nan_loss_steps: FrozenSet[int] = field(default_factory=frozenset)
    """Steps whose loss (and so gradients) are made NaN."""
    kill_during_save_at: Optional[int] = None
    """Iteration whose checkpoint save is killed (SIGKILL) after writing, before completing."""
    preempt_at: Optional[int] = None
    """Iteration after which the run behaves as if SLURM had sent SIGTERM."""

    @property
    def empty(self) -> bool:
        return not self.nan_loss_steps and self.kill_during_save_at is None and self.preempt_at is None


def read_fault_plan(env: Optional[Mapping[str, str]] = None) -> FaultPlan:
    spec = (os.environ if env is None else env).get(ENV_VAR, "")
    entries = dict(item.split("=", 1) for item in spec.split(";") if "=" in item)
    nan = frozenset(int(s) for s in entries.get("nan_loss", "").split(",") if s.strip())
    kill = entries.get("kill_during_save")
    preempt = entries.get("preempt_at")
    return FaultPlan(
        nan_loss_steps=nan,
        kill_during_save_at=int(kill) if kill else None,
        preempt_at=int(preempt) if preempt else None,
    )


def nan_loss(forward_step: ForwardStep) -> ForwardStep:
    """The same objective with every per-token loss NaN: a NaN loss, hence NaN gradients."""

    def poisoned(data_iterator, model):
        output, loss_func = forward_step(data_iterator, model)
        return output, lambda output_tensor: loss_func(output_tensor * float("nan"))

    return poisoned


class FaultInjection(Callback):
    """Appended after every other callback, so that its stop comes where a real signal's would."""

    def __init__(self, plan: FaultPlan):
        self.plan = plan
        self._objective: Optional[ForwardStep] = None

    def pre_train(self, trainer) -> None:
        if self.plan.kill_during_save_at is not None:
            trainer.checkpoints.before_commit.append(self._kill_during_save)

    def _kill_during_save(self, iteration: int) -> None:
        if iteration == self.plan.kill_during_save_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def pre_step(self, trainer) -> None:
        if trainer.step in self.plan.nan_loss_steps:
            self._objective = trainer.forward_step
            trainer.forward_step = nan_loss(self._objective)

    def post_step(self, trainer, outcome) -> None:
        if self._objective is not None:
            trainer.forward_step, self._objective = self._objective, None
        if self.plan.preempt_at == outcome.step and trainer.summary.stop_reason is None:
            save_and_stop(trainer, "stop signal (fault injection)")


def fault_callbacks(env: Optional[Mapping[str, str]] = None) -> List[Callback]:
    """[FaultInjection] when MEGATRON_SOTA_FAULTS asks for faults, else nothing."""
    plan = read_fault_plan(env)
    return [] if plan.empty else [FaultInjection(plan)]
