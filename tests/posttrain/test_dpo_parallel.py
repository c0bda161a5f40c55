"""DPO trains alike under tensor, pipeline and data parallelism: both rows of a pair reach every stage together,
the reference table is the same on every rank, and the loss per pair and its gradients are one process's."""

from __future__ import annotations

import pytest

from megatron_sota.runtime.local_ranks import run_distributed
from tests.posttrain.dpo_examples import dpo_job, use_fake_pairs
from tests.posttrain.layouts import (
    LAYOUT_IDS, LAYOUTS, assert_same_gradients, at_layout, for_gradients, gradients_probe, posttrain_probe,
)

pytestmark = pytest.mark.slow


def _job(**parallel):
    job = dpo_job(valid_files=["valid.jsonl"])
    job.train.eval_interval = 3
    return at_layout(job, **parallel)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return run_distributed(posttrain_probe, 1, _job(), str(tmp_path_factory.mktemp("dpo_ref")), use_fake_pairs)[0]


@pytest.fixture(scope="module")
def reference_gradients(tmp_path_factory) -> dict:
    run_dir = str(tmp_path_factory.mktemp("dpo_grads"))
    return run_distributed(gradients_probe, 1, for_gradients(_job()), run_dir, use_fake_pairs)[0]


# Several steps at DP=2: each rank's share of the data across steps and the metrics' reduction over DP; the
# first step's gradients are compared at every layout below.
@pytest.mark.parametrize("fsdp", ["none", "optim_grads_params"])  # and fully sharded (parallel.fsdp)
def test_dpo_at_dp2_reproduces_one_process_over_several_steps(tmp_path, reference, fsdp):
    run = run_distributed(posttrain_probe, 2, _job(**LAYOUTS[-1], fsdp=fsdp), str(tmp_path), use_fake_pairs)[0]
    assert len(reference["losses"]) == 3 and len(reference["val_losses"]) == 1
    assert run["losses"] == pytest.approx(reference["losses"], rel=1e-5)
    assert run["val_losses"] == pytest.approx(reference["val_losses"], rel=1e-5)
    for name, value in reference["val_metrics"][0].items():
        assert run["val_metrics"][0][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize("parallel", LAYOUTS, ids=LAYOUT_IDS)
def test_dpo_gradients_at_tp2_pp2_and_dp2_equal_one_process(tmp_path, reference_gradients, parallel):
    # Policy = reference at the first step (the probe runs before_first_step as the trainer does). Adam's update
    # hides a constant gradient scale from the losses above (a micro-batch's loss divided by its pairs twice).
    run = run_distributed(gradients_probe, 2, for_gradients(_job(**parallel)), str(tmp_path), use_fake_pairs)[0]
    assert_same_gradients(run, reference_gradients)
