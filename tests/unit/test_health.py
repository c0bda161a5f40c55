"""Loss health: consecutive non-finite steps stop the run; spikes are reported; fault plans parse."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from megatron_sota.training.fault_injection import read_fault_plan
from megatron_sota.training.health import LossHealth, TrainingDiverged


def test_consecutive_skips_raise_with_the_last_checkpoint_and_a_good_step_resets():
    health = LossHealth(max_skipped_steps=2, spike_factor=3.0)
    health.record_skip(5, float("nan"), None, "/ck/iter_0000004")
    health.record_update(6, 2.0)
    health.record_skip(7, float("nan"), None, "/ck/iter_0000004")
    with pytest.raises(TrainingDiverged, match="last good checkpoint: /ck/iter_0000004"):
        health.record_skip(8, float("inf"), float("nan"), "/ck/iter_0000004")
    assert health.total_skips == 3


def test_spike_is_reported_against_the_recent_mean_only_after_warm_history():
    health = LossHealth(max_skipped_steps=5, spike_factor=2.0)
    assert all(health.record_update(step, 3.0) is None for step in range(1, 11))
    report = health.record_update(11, 7.0)
    assert report is not None and "loss spike 7.0000 > 2.0 x recent mean 3.0000" in report
    assert health.record_update(12, 5.0) is None


def test_fault_plan_parsing():
    plan = read_fault_plan({"MEGATRON_SOTA_FAULTS": "nan_loss=3,4;kill_during_save=20;preempt_at=7"})
    assert plan.nan_loss_steps == {3, 4} and plan.kill_during_save_at == 20 and plan.preempt_at == 7
    assert read_fault_plan({}).nan_loss_steps == frozenset()


def test_faults_enter_as_a_callback_only_when_planned():
    from megatron_sota.training.fault_injection import FaultInjection, fault_callbacks

    assert fault_callbacks({}) == []
    (callback,) = fault_callbacks({"MEGATRON_SOTA_FAULTS": "nan_loss=2"})
    assert isinstance(callback, FaultInjection)


def test_nan_loss_swaps_the_objective_for_the_planned_step_and_restores_it():
    import torch

    from megatron_sota.training.fault_injection import FaultInjection, FaultPlan

    def objective(data_iterator, model):
        output = torch.tensor([1.0, 2.0])
        return output, lambda out: out.sum()

    trainer = SimpleNamespace(step=1, forward_step=objective, summary=SimpleNamespace(stop_reason=None))
    callback = FaultInjection(FaultPlan(nan_loss_steps=frozenset({2})))
    seen = []
    for step in (1, 2, 3):
        trainer.step = step
        callback.pre_step(trainer)
        output, loss_func = trainer.forward_step(None, None)
        seen.append(loss_func(output).item())
        callback.post_step(trainer, SimpleNamespace(step=step))
    assert seen[0] == seen[2] == 3.0 and math.isnan(seen[1])
    assert trainer.forward_step is objective
