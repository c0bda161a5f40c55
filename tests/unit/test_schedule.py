"""LR schedules: warm-up then cosine/constant/WSD to the configured floor, per iteration."""

from __future__ import annotations

import math

import pytest

from megatron_sota.config.optim import OptimizerConfig, SchedulerConfig
from megatron_sota.training.optimization import build_scheduler


class _Optimizer:
    def __init__(self):
        self.param_groups = [{"lr": 0.0, "weight_decay": 0.0}]


def _lrs(name: str, iters: int, **kwargs) -> list[float]:
    optimizer = _Optimizer()
    scheduler = build_scheduler(optimizer, OptimizerConfig(lr=1.0), SchedulerConfig(name=name, **kwargs), iters)
    lrs = []
    for _ in range(iters):
        scheduler.step(increment=1)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_cosine_warms_up_linearly_then_decays_to_ten_percent():
    lrs = _lrs("cosine", 110, warmup_iters=10)
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[59] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_constant_stays_at_peak_after_warmup():
    assert _lrs("constant", 50, warmup_iters=5)[5:] == pytest.approx([1.0] * 45)


def test_wsd_is_flat_then_decays_in_the_last_phase():
    lrs = _lrs("wsd", 100, warmup_iters=10, wsd_decay_iters=20)
    assert lrs[10:80] == pytest.approx([1.0] * 70)
    assert lrs[-1] == pytest.approx(0.1)
    assert lrs[90] < 1.0
