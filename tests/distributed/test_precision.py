"""Reduced precision trains the same model: bf16 follows fp32, fp16's loss scaler recovers from overflow."""

from __future__ import annotations

import pytest

from megatron_sota.runtime.local_ranks import run_distributed
from tests.distributed.jobs import stdlib_job
from tests.distributed.probes import step_stats_probe

pytestmark = pytest.mark.slow


def _stats(shards, tmp_path, dtype: str, steps: int) -> list[dict]:
    job = stdlib_job(shards)
    job.precision.dtype = dtype
    job.train.global_batch_size = 4
    job.train.iters = steps
    return run_distributed(step_stats_probe, 1, job, str(tmp_path), steps)[0]


@pytest.fixture(scope="module")
def fp32_stats(stdlib_shards, tmp_path_factory):
    return _stats(stdlib_shards, tmp_path_factory.mktemp("fp32"), "fp32", 2)


def test_bf16_first_step_follows_fp32(stdlib_shards, tmp_path, fp32_stats):
    bf16 = _stats(stdlib_shards, tmp_path, "bf16", 2)
    assert bf16[0]["loss"] == pytest.approx(fp32_stats[0]["loss"], rel=1e-2)
    assert bf16[0]["grad_norm"] == pytest.approx(fp32_stats[0]["grad_norm"], rel=5e-2)


def test_fp16_loss_scaling_backs_off_then_updates_with_unscaled_gradients(stdlib_shards, tmp_path, fp32_stats):
    fp16 = _stats(stdlib_shards, tmp_path, "fp16", 8)
    updated = [s for s in fp16 if not s["skipped"]]
    assert updated, f"every fp16 step was skipped: {fp16}"
    # The gradient norm is reported after unscaling: the same order as fp32's, not scale times smaller.
    assert updated[0]["grad_norm"] == pytest.approx(fp32_stats[0]["grad_norm"], rel=0.5)
    if any(s["skipped"] for s in fp16):
        assert fp16[-1]["loss_scale"] < 65536.0
