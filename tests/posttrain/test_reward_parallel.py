"""The reward model trains alike under tensor (+ sequence), pipeline and data parallelism: both rows of each pair
reach every stage and rank, and the pair-averaged loss, its gradients and TRL's metrics are one process's.

TP=2 runs with sequence parallelism: the reward head gathers the sequence and must not sum its input gradient."""

from __future__ import annotations

import pytest

from megatron_sota.runtime.local_ranks import run_distributed
from tests.posttrain.layouts import (
    LAYOUTS, assert_same_gradients, at_layout, for_gradients, gradients_probe, posttrain_probe,
)
from tests.posttrain.pair_examples import rm_job, use_fake_pairs

pytestmark = pytest.mark.slow

RM_LAYOUTS = [{"tp": 2, "sp": True}, *LAYOUTS[1:]]
RM_LAYOUT_IDS = ["tp2sp", "pp2", "dp2"]


def _job(**parallel):
    job = rm_job(valid_files=["valid.jsonl"])
    job.train.iters, job.train.eval_interval = 3, 3
    return at_layout(job, **parallel)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return run_distributed(posttrain_probe, 1, _job(), str(tmp_path_factory.mktemp("rm_ref")), use_fake_pairs)[0]


@pytest.fixture(scope="module")
def reference_gradients(tmp_path_factory) -> dict:
    run_dir = str(tmp_path_factory.mktemp("rm_grads"))
    return run_distributed(gradients_probe, 1, for_gradients(_job()), run_dir, use_fake_pairs)[0]


# Several steps at DP=2: each rank's share of the data across steps and the metrics' reduction over DP; the
# first step's gradients are compared at every layout below.
def test_a_reward_model_at_dp2_reproduces_one_process_over_several_steps(tmp_path, reference):
    run = run_distributed(posttrain_probe, 2, _job(**LAYOUTS[-1]), str(tmp_path), use_fake_pairs)[0]
    assert len(reference["losses"]) == 3 and len(reference["val_losses"]) == 1
    assert run["losses"] == pytest.approx(reference["losses"], rel=1e-5)
    assert run["val_losses"] == pytest.approx(reference["val_losses"], rel=1e-5)
    (ours,), (expected,) = run["val_metrics"], reference["val_metrics"]
    assert set(expected) == {"accuracy", "margin", "mean_reward"}
    assert ours == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("parallel", RM_LAYOUTS, ids=RM_LAYOUT_IDS)
def test_reward_model_gradients_at_tp2_pp2_and_dp2_equal_one_process(tmp_path, reference_gradients, parallel):
    run = run_distributed(gradients_probe, 2, for_gradients(_job(**parallel)), str(tmp_path), use_fake_pairs)[0]
    assert_same_gradients(run, reference_gradients)


def test_a_fully_sharded_reward_model_is_refused_until_it_matches_ddp():
    """At DP=2 with parallel.fsdp=optim_grads_params the third step's loss was 0.4910 against DDP's 0.4859 (the first
    two equal to 1e-5); until that is understood the config refuses the pair."""
    from megatron_sota.config.machine import Machine
    from megatron_sota.config.validation import validate_job
    from megatron_sota.errors import MegatronSotaError

    job = _job(**LAYOUTS[-1], fsdp="optim_grads_params")
    with pytest.raises(MegatronSotaError, match="parallel.fsdp=optim_grads_params with posttrain=rm"):
        validate_job(job, 2, Machine(cuda=False, transformer_engine=False))
