"""Reduced precision trains the same model: bf16 follows fp32, fp16's loss scaler recovers from overflow."""

from __future__ import annotations

import pytest

from megatron_sota.runtime.local_ranks import run_distributed
from tests.distributed.jobs import stdlib_job
from tests.distributed.probes import step_stats_probe

pytestmark = pytest.mark.slow


def _stats(shards, tmp_path, dtype: str, steps: int, initial_loss_scale: float = 65536.0, until_update=False) -> list[dict]:
    job = stdlib_job(shards)
    job.precision.dtype = dtype
    job.precision.initial_loss_scale = initial_loss_scale
    job.train.global_batch_size = 4
    job.train.iters = steps
    return run_distributed(step_stats_probe, 1, job, str(tmp_path), steps, until_update)[0]


@pytest.fixture(scope="module")
def fp32_stats(stdlib_shards, tmp_path_factory):
    return _stats(stdlib_shards, tmp_path_factory.mktemp("fp32"), "fp32", 1)  # the tests read its first step only


def test_bf16_first_step_follows_fp32(stdlib_shards, tmp_path, fp32_stats):
    bf16 = _stats(stdlib_shards, tmp_path, "bf16", 1)
    assert bf16[0]["loss"] == pytest.approx(fp32_stats[0]["loss"], rel=1e-2)
    assert bf16[0]["grad_norm"] == pytest.approx(fp32_stats[0]["grad_norm"], rel=5e-2)


def test_fp16_loss_scaling_backs_off_then_updates_with_unscaled_gradients(stdlib_shards, tmp_path, fp32_stats):
    """A 2**20 loss scale overflows fp16's gradients for certain: the scaler must skip those steps,
    halve the scale until the gradients fit, then update with the gradients unscaled again."""
    initial = 2.0**20
    # Up to 16 steps, stopping at the first update: the assertions read nothing after it.
    fp16 = _stats(stdlib_shards, tmp_path, "fp16", 16, initial_loss_scale=initial, until_update=True)
    skipped = [s["skipped"] for s in fp16]
    assert skipped[0] and False in skipped, f"expected overflows first, then an update: {fp16}"
    first_update = skipped.index(False)
    assert all(skipped[:first_update])
    # Scale after each skipped step: megatron-core lets the first overflow pass (hysteresis 2), then halves per overflow.
    scales = [s["loss_scale"] for s in fp16]
    assert scales[:first_update] == [initial / 2**k for k in range(first_update)]
    assert scales[first_update] == scales[first_update - 1] < initial  # the update keeps the backed-off scale
    assert all(s["grad_norm"] is None for s in fp16[:first_update])
    # No update so far: same weights as fp32's first step. The gradient norm is reported after
    # unscaling, so it is of fp32's order, not the scale times larger.
    assert fp16[first_update]["grad_norm"] == pytest.approx(fp32_stats[0]["grad_norm"], rel=0.5)
