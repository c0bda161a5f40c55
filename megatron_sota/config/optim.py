"""Typed configuration of optimisation: optimizer, LR schedule and numeric precision.

Defaults are the project's pretraining recipe; presets and experiments override them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class OptimizerConfig:
    name: str = "adamw"
    lr: float = 3e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_grad: float = 1.0
    """Global gradient-norm clip; 0 disables clipping."""


@dataclass
class SchedulerConfig:
    name: str = "cosine"
    """cosine, constant or wsd (warmup-stable-decay)."""
    warmup_iters: int = 2000
    decay_iters: Optional[int] = None
    """Iterations over which the LR decays after warm-up ends; train.iters - warmup when null."""
    min_lr_ratio: float = 0.1
    """Floor of the decay as a fraction of the peak LR."""
    wsd_decay_iters: Optional[int] = None
    """wsd only: length of the final decay phase; 20% of the schedule when null."""
    wsd_decay_style: str = "linear"
    """wsd only: shape of the final decay (linear, cosine, exponential, minus_sqrt)."""
    changed_at_resume: str = "refuse"
    """A resumed checkpoint's schedule (peak and floor LR, warm-up, decay length and style, weight decay) differs
    from the one this config gives, e.g. after raising train.iters: refuse (stop, showing both), checkpoint (keep
    the checkpoint's schedule) or config (follow this config from the checkpoint's step on)."""


@dataclass
class PrecisionConfig:
    dtype: str = "auto"
    """auto (bf16 on GPU, fp32 on CPU), fp32, bf16 or fp16 (with dynamic loss scaling)."""
    fp8: Optional[str] = None
    """FP8 recipe passed to megatron-core (e4m3 or hybrid); needs Transformer Engine."""
    fp8_recipe: str = "delayed"
    initial_loss_scale: float = 65536.0
    """fp16 only: starting value of the dynamic loss scale."""
