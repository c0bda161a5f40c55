"""SFT trains alike under tensor, pipeline and data parallelism: the packed rows' ids and positions reach
every stage and rank, and the token-weighted loss is the same as one process's."""

from __future__ import annotations

import pytest

from megatron_sota.runtime.local_ranks import run_distributed
from tests.posttrain.examples import sft_job, use_fake_encodings

pytestmark = pytest.mark.slow


def sft_probe(rank: int, job, run_dir: str) -> dict:
    from megatron_sota.posttrain.run import posttrain

    use_fake_encodings()
    summary = posttrain(job, run_dir)
    return {"losses": summary.losses, "val_losses": summary.val_losses}


def _job(**parallel):
    job = sft_job(valid_files=["valid.jsonl"])
    job.train.global_batch_size, job.train.eval_interval = 4, 5
    job.train.micro_batch_size = parallel.pop("micro_batch_size", 2)
    for key, value in parallel.items():
        setattr(job.parallel, key, value)
    return job


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    return run_distributed(sft_probe, 1, _job(), str(tmp_path_factory.mktemp("sft_ref")))[0]


@pytest.mark.parametrize("parallel", [{"tp": 2}, {"pp": 2}, {"micro_batch_size": 1}], ids=["tp2", "pp2", "dp2"])
def test_sft_at_tp2_pp2_and_dp2_reproduces_one_process(tmp_path, reference, parallel):
    run = run_distributed(sft_probe, 2, _job(**parallel), str(tmp_path))[0]
    assert len(reference["losses"]) == 5 and len(reference["val_losses"]) == 1
    assert run["losses"] == pytest.approx(reference["losses"], rel=1e-5)
    assert run["val_losses"] == pytest.approx(reference["val_losses"], rel=1e-5)
