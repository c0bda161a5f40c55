"""Megatron-FSDP (parallel.fsdp) trains the same model as DDP, holds less per rank the more it shards, and its
checkpoints resume exactly and load into DDP layouts (and DDP's into it) at another data-parallel size.

Real megatron-core Megatron-FSDP on gloo ranks on CPU, fp32, from the same seed and stdlib-corpus batches.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from megatron_sota.runtime.local_ranks import run_distributed
from tests.distributed.jobs import STEPS, stdlib_job
from tests.distributed.probes import layout_probe, pretrain_probe

pytestmark = pytest.mark.slow

STRATEGIES = ("optim", "optim_grads", "optim_grads_params")
LOSS_RTOL = 1e-5
ITERS, STOP_AT = 6, 3


def _probe(shards, tmp_path, world: int, **parallel) -> dict:
    job = stdlib_job(shards, micro_batch_size=2, **parallel)
    return run_distributed(layout_probe, world, job, str(tmp_path), STEPS)[0]


@pytest.fixture(scope="module")
def runs(stdlib_shards, tmp_path_factory) -> dict:
    """DP=2: plain DDP with the distributed optimizer, and each FSDP strategy."""
    return {
        strategy: _probe(stdlib_shards, tmp_path_factory.mktemp(strategy), 2, fsdp=strategy)
        for strategy in ("none", *STRATEGIES)
    }


def _assert_same_training(run: dict, ref: dict, rtol: float, atol: float) -> None:
    assert run["first_loss"] == pytest.approx(ref["first_loss"], rel=LOSS_RTOL)
    assert run["losses"] == pytest.approx(ref["losses"], rel=LOSS_RTOL)
    assert set(run["params"]) == set(ref["params"])
    for name, expected in ref["params"].items():
        torch.testing.assert_close(run["params"][name], expected, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def test_ddp_reference_learns(runs):
    assert runs["none"]["losses"][-1] < runs["none"]["first_loss"] - 0.05


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_reproduces_ddp_losses_and_weights(runs, strategy):
    # The same reductions in another order (reduce-scatter vs all-reduce): fp32 noise only.
    _assert_same_training(runs[strategy], runs["none"], rtol=1e-4, atol=1e-6)


def test_memory_per_rank_falls_as_the_strategy_shards_more(runs):
    held = {name: run["bytes"] for name, run in runs.items()}
    full_fp32 = held["none"]["weights"]  # DDP keeps every weight on every rank
    # optim: gradients and weights whole, optimizer states (and Megatron-FSDP's fp32 main copy) halved.
    assert held["optim"]["grads"] == pytest.approx(full_fp32, rel=0.01)
    assert held["optim"]["weights"] == pytest.approx(full_fp32, rel=0.01)
    # optim_grads: the gradient buffer halved too; optim_grads_params: the weights as well.
    assert held["optim_grads"]["grads"] == pytest.approx(full_fp32 / 2, rel=0.01)
    assert held["optim_grads_params"]["weights"] == pytest.approx(full_fp32 / 2, rel=0.01)
    assert held["optim_grads_params"]["grads"] == pytest.approx(full_fp32 / 2, rel=0.01)
    total = {name: h["weights"] + h["grads"] + h["optimizer"] for name, h in held.items()}
    assert total["optim"] > total["optim_grads"] > total["optim_grads_params"]


def test_tp2_dp2_fully_sharded_reproduces_ddp(stdlib_shards, tmp_path, runs):
    run = _probe(stdlib_shards, tmp_path, 4, tp=2, sp=True, fsdp="optim_grads_params")
    _assert_same_training(run, runs["none"], rtol=1e-3, atol=2e-5)
    assert run["bytes"]["weights"] == pytest.approx(runs["none"]["bytes"]["weights"] / 4, rel=0.01)


def test_cp2_dp2_fully_sharded_reproduces_ddp(stdlib_shards, tmp_path, runs):
    # Megatron-FSDP shards over the data-parallel x context-parallel group.
    run = _probe(stdlib_shards, tmp_path, 4, cp=2, fsdp="optim_grads_params")
    _assert_same_training(run, runs["none"], rtol=1e-3, atol=2e-5)
    assert run["bytes"]["weights"] == pytest.approx(runs["none"]["bytes"]["weights"] / 4, rel=0.01)


# ------------------------------------------------------------------ checkpoints
def _ckpt_job(shards, run_dir, **parallel):
    job = stdlib_job(shards, **parallel)
    job.train.iters = ITERS
    job.train.eval_interval = 0
    job.checkpoint.dir = os.path.join(run_dir, "checkpoints")
    return job


def _run(shards, run_dir, world: int, faults: str = "", dtype: str = "fp32", **parallel) -> dict:
    job = _ckpt_job(shards, str(run_dir), **parallel)
    job.precision.dtype = dtype
    return run_distributed(pretrain_probe, world, job, str(run_dir), faults)[0]


@pytest.fixture(scope="module")
def fsdp_stopped(stdlib_shards, tmp_path_factory):
    """FSDP (optim_grads_params) at DP=2: a straight run, and one stopped at STOP_AT with a checkpoint."""
    straight = _run(stdlib_shards, tmp_path_factory.mktemp("fsdp_straight"), 2, fsdp="optim_grads_params")
    stopped_dir = tmp_path_factory.mktemp("fsdp_stopped")
    stopped = _run(stdlib_shards, stopped_dir, 2, f"preempt_at={STOP_AT}", fsdp="optim_grads_params")
    assert len(stopped["losses"]) == STOP_AT
    return straight, stopped, stopped_dir


def test_fsdp_resume_reproduces_the_uninterrupted_losses_bitwise(stdlib_shards, tmp_path, fsdp_stopped):
    straight, stopped, stopped_dir = fsdp_stopped
    run_dir = shutil.copytree(stopped_dir, tmp_path / "run")
    resumed = _run(stdlib_shards, run_dir, 2, fsdp="optim_grads_params")
    assert resumed["first_step"] == STOP_AT + 1
    assert stopped["losses"] + resumed["losses"] == straight["losses"]


def test_fsdp_checkpoint_continues_in_ddp_on_one_rank_and_ddp_checkpoint_in_fsdp_on_two(
    stdlib_shards, tmp_path, fsdp_stopped
):
    straight, _, stopped_dir = fsdp_stopped
    # FSDP at DP=2 -> DDP (distributed optimizer) at DP=1: weights and Adam state resharded.
    run_dir = shutil.copytree(stopped_dir, tmp_path / "to_ddp")
    in_ddp = _run(stdlib_shards, run_dir, 1)
    assert in_ddp["first_step"] == STOP_AT + 1
    assert in_ddp["losses"] == pytest.approx(straight["losses"][STOP_AT:], rel=1e-5)
    # DDP at DP=1 -> FSDP `optim` at DP=2, whose whole weights are all-gathered after loading (the resume above
    # loads optim_grads_params, whose weights stay sharded).
    ddp_dir = tmp_path / "ddp"
    ddp = _run(stdlib_shards, ddp_dir, 1, f"preempt_at={STOP_AT}")
    in_fsdp = _run(stdlib_shards, shutil.copytree(ddp_dir, tmp_path / "to_optim"), 2, fsdp="optim")
    assert in_fsdp["losses"] == pytest.approx(in_ddp["losses"], rel=1e-5)
    assert ddp["losses"] == pytest.approx(straight["losses"][:STOP_AT], rel=1e-5)


def test_bf16_fsdp_resumes_bitwise_from_its_fp32_main_copies(stdlib_shards, tmp_path):
    """bf16 compute with fp32 main weights (megatron-core's mixed precision): the checkpoint keeps the fp32 copies,
    so the resumed run continues exactly, not from the rounded bf16 weights."""
    fsdp = dict(fsdp="optim_grads_params", dtype="bf16")
    straight = _run(stdlib_shards, tmp_path / "straight", 2, **fsdp)
    stopped = _run(stdlib_shards, tmp_path / "run", 2, f"preempt_at={STOP_AT}", **fsdp)
    resumed = _run(stdlib_shards, tmp_path / "run", 2, **fsdp)
    assert stopped["losses"] + resumed["losses"] == straight["losses"]
