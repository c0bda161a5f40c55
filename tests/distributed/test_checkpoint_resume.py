"""Checkpoints never lose work: a stopped and resumed run logs the losses of an uninterrupted one,
and a checkpoint saved at one parallel layout loads at another with the same validation loss."""

from __future__ import annotations

import os
import shutil

import pytest

from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.local_ranks import run_distributed
from tests.distributed.jobs import stdlib_job
from tests.distributed.probes import pretrain_probe, validation_probe

pytestmark = pytest.mark.slow

ITERS, STOP_AT = 6, 3
PREEMPTED = 75


def _ckpt_job(shards, run_dir, **parallel):
    job = stdlib_job(shards, **parallel)
    job.train.iters = ITERS
    job.train.eval_interval = STOP_AT
    job.train.eval_iters = 1
    job.checkpoint.dir = os.path.join(run_dir, "checkpoints")
    return job


def _run(shards, run_dir, world: int, faults: str = "", job=None, **parallel) -> dict:
    job = job or _ckpt_job(shards, str(run_dir), **parallel)
    return run_distributed(pretrain_probe, world, job, str(run_dir), faults)[0]


def _straight_and_stopped(shards, tmp_path_factory, name: str, world: int, **parallel):
    straight = _run(shards, tmp_path_factory.mktemp(f"{name}_straight"), world, **parallel)
    stopped_dir = tmp_path_factory.mktemp(f"{name}_stopped")
    stopped = _run(shards, stopped_dir, world, f"preempt_at={STOP_AT}", **parallel)
    assert stopped["exit_code"] == PREEMPTED and len(stopped["losses"]) == STOP_AT
    return straight, stopped, stopped_dir


@pytest.fixture(scope="module")
def tp2(stdlib_shards, tmp_path_factory):
    return _straight_and_stopped(stdlib_shards, tmp_path_factory, "tp2", 2, tp=2)


@pytest.fixture(scope="module")
def pp2(stdlib_shards, tmp_path_factory):
    return _straight_and_stopped(stdlib_shards, tmp_path_factory, "pp2", 2, pp=2)


@pytest.fixture(scope="module")
def cp2(stdlib_shards, tmp_path_factory):
    return _straight_and_stopped(stdlib_shards, tmp_path_factory, "cp2", 2, cp=2)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("layout", ["tp2", "pp2", "cp2"])
def test_resume_reproduces_uninterrupted_losses_bitwise(stdlib_shards, tmp_path, request, layout):
    straight, stopped, stopped_dir = request.getfixturevalue(layout)
    parallel = {"tp2": dict(tp=2), "pp2": dict(pp=2), "cp2": dict(cp=2)}[layout]
    run_dir = _copy(stopped_dir, tmp_path / "run")
    resumed = _run(stdlib_shards, run_dir, 2, **parallel)
    assert resumed["first_step"] == STOP_AT + 1 and resumed["exit_code"] == 0
    assert stopped["losses"] + resumed["losses"] == straight["losses"]  # bitwise, fp32 on CPU
    assert resumed["val_losses"] == straight["val_losses"][1:]


@pytest.mark.parametrize("layout, target", [("tp2", dict(tp=1)), ("pp2", dict(pp=1)), ("cp2", dict(cp=1))])
def test_reshard_gives_the_same_validation_loss(stdlib_shards, tmp_path, request, layout, target):
    _, stopped, stopped_dir = request.getfixturevalue(layout)
    checkpoint = os.path.join(stopped_dir, "checkpoints", f"iter_{STOP_AT:07d}")
    job = _ckpt_job(stdlib_shards, str(tmp_path), **target)
    val = run_distributed(validation_probe, 1, job, str(tmp_path), checkpoint)[0]
    assert val == pytest.approx(stopped["val_losses"][-1], abs=1e-5)


@pytest.mark.parametrize("layout, target", [("tp2", dict(tp=1)), ("cp2", dict(cp=1))])
def test_training_continues_on_one_rank_from_a_two_rank_checkpoint_with_resharded_optimizer(
    stdlib_shards, tmp_path, request, layout, target
):
    straight, _, stopped_dir = request.getfixturevalue(layout)
    run_dir = _copy(stopped_dir, tmp_path / "run")
    resumed = _run(stdlib_shards, run_dir, 1, **target)
    # Same model and optimizer state, another layout: fp32 reduction order only.
    assert resumed["losses"] == pytest.approx(straight["losses"][STOP_AT:], abs=1e-4)


def test_dp2_checkpoint_loads_at_dp1_and_tp1_checkpoint_at_tp2(stdlib_shards, tmp_path):
    dp2 = _run(stdlib_shards, tmp_path / "dp2", 2, f"preempt_at={STOP_AT}")
    val_dp1 = run_distributed(
        validation_probe, 1, _ckpt_job(stdlib_shards, str(tmp_path)), str(tmp_path),
        str(tmp_path / "dp2" / "checkpoints" / f"iter_{STOP_AT:07d}"),
    )[0]
    assert val_dp1 == pytest.approx(dp2["val_losses"][-1], abs=1e-5)
    tp1 = _run(stdlib_shards, tmp_path / "tp1", 1, f"preempt_at={STOP_AT}")
    val_tp2 = run_distributed(
        validation_probe, 2, _ckpt_job(stdlib_shards, str(tmp_path), tp=2), str(tmp_path),
        str(tmp_path / "tp1" / "checkpoints" / f"iter_{STOP_AT:07d}"),
    )[0]
    assert val_tp2 == pytest.approx(tp1["val_losses"][-1], abs=1e-5)


def test_switching_optimizer_kind_needs_load_optimizer_false_and_then_works(stdlib_shards, tmp_path, tp2):
    _, _, stopped_dir = tp2
    run_dir = _copy(stopped_dir, tmp_path / "run")
    job = _ckpt_job(stdlib_shards, str(run_dir), tp=2, distributed_optimizer=False)
    with pytest.raises(MegatronSotaError, match="holds distributed optimizer state but this run uses the plain"):
        run_distributed(pretrain_probe, 2, job, str(run_dir), "")
    job.checkpoint.load_optimizer = False
    resumed = run_distributed(pretrain_probe, 2, job, str(run_dir), "")[0]
    assert resumed["first_step"] == STOP_AT + 1 and len(resumed["losses"]) == ITERS - STOP_AT


def test_plain_optimizer_checkpoint_reshards_from_tp2_to_tp1(stdlib_shards, tmp_path, tp2):
    straight, _, _ = tp2
    run_dir = tmp_path / "run"
    stopped = _run(stdlib_shards, run_dir, 2, f"preempt_at={STOP_AT}", tp=2, distributed_optimizer=False)
    assert stopped["exit_code"] == PREEMPTED
    resumed = _run(stdlib_shards, run_dir, 1, tp=1, distributed_optimizer=False)
    assert resumed["losses"] == pytest.approx(straight["losses"][STOP_AT:], abs=1e-4)
