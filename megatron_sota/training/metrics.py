"""Writes per-step metrics: one console line, TensorBoard scalars and a metrics.jsonl row.

Only rank 0 writes. It must not compute anything the step did not already measure.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch

from megatron_sota.atomic_files import write_text

logger = logging.getLogger(__name__)


def memory_gib(device: torch.device) -> Optional[float]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**30
    except ImportError:
        return None


@dataclass
class StepMetrics:
    step: int
    loss: float
    lr: float
    grad_norm: Optional[float]
    tokens_per_s: float
    step_time_s: float
    consumed_samples: int
    mfu: Optional[float]
    memory_gib: Optional[float]
    loss_scale: Optional[float] = None
    skipped: bool = False
    """fp16: the loss scaler found inf/nan gradients and skipped the update."""
    eta_s: Optional[float] = None
    """Remaining wall time at the mean step time so far."""
    metrics: Dict[str, float] = field(default_factory=dict)
    """The objective's other metrics (training/objective.py), written under their own names."""


def drop_rows_after(run_dir: str, step: int) -> int:
    """Removes metrics.jsonl rows of steps after `step` (a resumed run logs them again); returns how many."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as handle:
        lines = handle.readlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        write_text(path, "".join(kept))
    return len(lines) - len(kept)


class MetricsWriter:
    """Rank 0's sinks for metrics: console, TensorBoard (optional) and <run_dir>/metrics.jsonl."""

    def __init__(self, run_dir: str, enabled: bool, tensorboard: bool, total_steps: int):
        self.enabled = enabled
        self.total_steps = total_steps
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        self._jsonl = open(os.path.join(run_dir, "metrics.jsonl"), "a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=os.path.join(run_dir, "tensorboard"))

    def log_train(self, m: StepMetrics) -> None:
        if not self.enabled:
            return
        parts = [
            f"step {m.step:>6}/{self.total_steps}",
            f"loss {m.loss:.4f}",
            f"lr {m.lr:.3e}",
            f"grad_norm {m.grad_norm:.3f}" if m.grad_norm is not None else "grad_norm n/a",
            f"tokens/s {m.tokens_per_s:,.0f}",
            f"step {m.step_time_s * 1000:.0f} ms",
            f"MFU {m.mfu * 100:.1f}%" if m.mfu is not None else "MFU n/a",
            f"mem {m.memory_gib:.2f} GiB" if m.memory_gib is not None else "",
            f"loss scale {m.loss_scale:g}" if m.loss_scale is not None else "",
            "SKIPPED (inf/nan grads)" if m.skipped else "",
            f"ETA {_clock(m.eta_s)}" if m.eta_s is not None else "",
            *(f"{name} {value:.4f}" for name, value in m.metrics.items()),
        ]
        logger.info(" | ".join(p for p in parts if p))
        row = {k: v for k, v in m.__dict__.items() if v is not None and k != "metrics"}
        self._jsonl.write(json.dumps({**row, **m.metrics}) + "\n")
        if self._tb is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "memory_gib", "loss_scale"):
                value = getattr(m, key)
                if value is not None:
                    self._tb.add_scalar(f"train/{key}", value, m.step)
            for name, value in m.metrics.items():
                self._tb.add_scalar(f"train/{name}", value, m.step)

    def log_validation(
        self, step: int, loss: float, metrics: Optional[Dict[str, float]] = None, perplexity: bool = True
    ) -> None:
        """`metrics`: the objective's other metrics, written as val_<name> (TensorBoard: valid/<name>);
        `perplexity`: show exp(loss), for a per-token language-model loss only."""
        if not self.enabled:
            return
        metrics = metrics or {}
        shown = "".join(f" | {name} {value:.4f}" for name, value in metrics.items())
        ppl = f" | ppl {_safe_exp(loss):.2f}" if perplexity else ""
        logger.info(f"validation at step {step}: loss {loss:.4f}{ppl}{shown}")
        row = {"step": step, "val_loss": loss, **{f"val_{name}": value for name, value in metrics.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        if self._tb is not None:
            self._tb.add_scalar("valid/loss", loss, step)
            for name, value in metrics.items():
                self._tb.add_scalar(f"valid/{name}", value, step)

    def log_eval(self, step: int, values: dict, seconds: float) -> None:
        """In-loop task metrics, keyed "<task>/<metric>"."""
        if not self.enabled:
            return
        shown = " | ".join(f"{key} {value:.4f}" for key, value in values.items())
        logger.info(f"eval at step {step} ({seconds:.1f}s): {shown}")
        self._jsonl.write(json.dumps({"step": step, "eval": values, "eval_seconds": round(seconds, 3)}) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"eval/{key}", value, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _safe_exp(x: float) -> float:
    import math

    return math.exp(min(x, 50.0))
