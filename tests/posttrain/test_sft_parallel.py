"""SFT trains alike under tensor, pipeline and data parallelism: the packed rows' ids and positions reach
every stage and rank, and the token-weighted loss and its gradients are the same as one process's.

The vocabulary (200) leaves output-layer padding rows, on the second TP rank at TP=2: the loss must leave them out."""

from __future__ import annotations

import pytest

from megatron_sota.runtime.local_ranks import run_distributed
from tests.posttrain.examples import sft_job, use_fake_encodings
from tests.posttrain.layouts import (
    LAYOUT_IDS, LAYOUTS, assert_same_gradients, at_layout, for_gradients, gradients_probe, posttrain_probe,
)

pytestmark = pytest.mark.slow

VOCAB = 200


def _job(**parallel):
    job = sft_job(valid_files=["valid.jsonl"])
    job.tokenizer.vocab_size = job.model.vocab_size = VOCAB
    job.train.global_batch_size, job.train.eval_interval = 4, 5
    return at_layout(job, **parallel)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return run_distributed(posttrain_probe, 1, _job(), str(tmp_path_factory.mktemp("sft_ref")), use_fake_encodings)[0]


@pytest.fixture(scope="module")
def reference_gradients(tmp_path_factory) -> dict:
    run_dir = str(tmp_path_factory.mktemp("sft_grads"))
    return run_distributed(gradients_probe, 1, for_gradients(_job()), run_dir, use_fake_encodings)[0]


# Several steps at DP=2: each rank's share of the data across steps and the metrics' reduction over DP; the
# first step's gradients are compared at every layout below.
@pytest.mark.parametrize("fsdp", ["none", "optim_grads_params"])  # and fully sharded (parallel.fsdp)
def test_sft_at_dp2_reproduces_one_process_over_several_steps(tmp_path, reference, fsdp):
    run = run_distributed(posttrain_probe, 2, _job(**LAYOUTS[-1], fsdp=fsdp), str(tmp_path), use_fake_encodings)[0]
    assert len(reference["losses"]) == 5 and len(reference["val_losses"]) == 1
    assert run["losses"] == pytest.approx(reference["losses"], rel=1e-5)
    assert run["val_losses"] == pytest.approx(reference["val_losses"], rel=1e-5)


@pytest.mark.parametrize("parallel", LAYOUTS, ids=LAYOUT_IDS)
def test_sft_gradients_at_tp2_pp2_and_dp2_equal_one_process(tmp_path, reference_gradients, parallel):
    run = run_distributed(gradients_probe, 2, for_gradients(_job(**parallel)), str(tmp_path), use_fake_encodings)[0]
    assert_same_gradients(run, reference_gradients)
