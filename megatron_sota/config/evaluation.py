"""Typed in-loop evaluation settings (the `eval` group of conf/): which tasks run on the weights being trained, and how often."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class EvalConfig:
    tasks: List[str] = field(default_factory=list)
    """Task names from conf/eval/tasks/ (or JSONL paths with `type` given there); empty disables in-loop evaluation."""
    interval: int = 0
    """Evaluate every this many steps and at the last step; 0 disables."""
    limit: Optional[int] = None
    """Score at most this many records per task (in-loop evaluation should cost seconds, not minutes)."""
    micro_batch_size: int = 4
    """Sequences per forward pass while scoring."""
