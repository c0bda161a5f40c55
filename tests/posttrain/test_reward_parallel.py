"""The reward model trains alike under tensor (+ sequence), pipeline and data parallelism: both rows of each pair
reach every stage and rank, and the pair-averaged loss and TRL's metrics are one process's."""

from __future__ import annotations

import pytest

from megatron_sota.runtime.local_ranks import run_distributed
from tests.posttrain.layouts import LAYOUTS, at_layout, posttrain_probe
from tests.posttrain.pair_examples import rm_job, use_fake_pairs

pytestmark = pytest.mark.slow


def _job(**parallel):
    job = rm_job(valid_files=["valid.jsonl"])
    job.train.iters, job.train.eval_interval = 3, 3
    return at_layout(job, **parallel)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return run_distributed(posttrain_probe, 1, _job(), str(tmp_path_factory.mktemp("rm_ref")), use_fake_pairs)[0]


@pytest.mark.parametrize("parallel", [{"tp": 2, "sp": True}, *LAYOUTS[1:]], ids=["tp2sp", "pp2", "dp2"])
def test_a_reward_model_at_tp2_pp2_and_dp2_reproduces_one_process(tmp_path, reference, parallel):
    run = run_distributed(posttrain_probe, 2, _job(**parallel), str(tmp_path), use_fake_pairs)[0]
    assert len(reference["losses"]) == 3 and len(reference["val_losses"]) == 1
    assert run["losses"] == pytest.approx(reference["losses"], rel=1e-5)
    assert run["val_losses"] == pytest.approx(reference["val_losses"], rel=1e-5)
    (ours,), (expected,) = run["val_metrics"], reference["val_metrics"]
    assert set(expected) == {"accuracy", "margin", "mean_reward"}
    assert ours == pytest.approx(expected, rel=1e-5, abs=1e-6)
