"""Test hooks that inject faults into a real run, read from MEGATRON_SOTA_FAULTS.

Format: "nan_loss=3,4;kill_during_save=20;preempt_at=10" (steps). Empty by default; used by tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import FrozenSet, Mapping, Optional

ENV_VAR = "MEGATRON_SOTA_FAULTS"


@dataclass(frozen=True)
class FaultPlan:
    nan_loss_steps: FrozenSet[int] = field(default_factory=frozenset)
    """Steps whose loss (and so gradients) are made NaN."""
    kill_during_save_at: Optional[int] = None
    """Iteration whose checkpoint save is killed (SIGKILL) after writing, before completing."""
    preempt_at: Optional[int] = None
    """Iteration after which the run behaves as if SLURM had sent SIGTERM."""


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
