"""PyTorch FSDP2 (parallel.fsdp_impl=torch) trains the same model as DDP, alone and with tensor parallelism, and its
checkpoints resume exactly and load into DDP at another data-parallel size; the combinations it cannot do are refused.

Real megatron-core TorchFullyShardedDataParallel on gloo ranks on CPU, fp32, from the same seed and stdlib-corpus batches.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from megatron_sota.config.job import JobConfig
from megatron_sota.config.machine import Machine
from megatron_sota.config.validation import validate_job
from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.local_ranks import run_distributed
from tests.distributed.jobs import STEPS, stdlib_job
from tests.distributed.probes import layout_probe, pretrain_probe

FSDP2 = dict(fsdp="optim_grads_params", fsdp_impl="torch", distributed_optimizer=False)
ITERS, STOP_AT = 6, 3
CPU_ONLY = Machine(cuda=False, transformer_engine=False)


def _probe(shards, tmp_path, world: int, **parallel) -> dict:
    job = stdlib_job(shards, micro_batch_size=2, **parallel)
    return run_distributed(layout_probe, world, job, str(tmp_path), STEPS)[0]


@pytest.fixture(scope="module")
def ddp(stdlib_shards, tmp_path_factory) -> dict:
    """Plain DDP at DP=2 with the distributed optimizer: the reference."""
    return _probe(stdlib_shards, tmp_path_factory.mktemp("ddp"), 2)


def _assert_same_training(run: dict, ref: dict, rtol: float, atol: float) -> None:
    assert run["losses"] == pytest.approx(ref["losses"], rel=1e-5)
    assert run["grad_norms"] == pytest.approx(ref["grad_norms"], rel=1e-4)
    assert set(run["params"]) == set(ref["params"])
    for name, expected in ref["params"].items():
        torch.testing.assert_close(run["params"][name], expected, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


@pytest.mark.slow
def test_fsdp2_reproduces_ddp_losses_and_weights_and_shards_them(stdlib_shards, tmp_path, ddp):
    run = _probe(stdlib_shards, tmp_path, 2, **FSDP2)
    assert ddp["losses"][-1] < ddp["first_loss"] - 0.05  # the reference learns
    # The same reductions in another order (reduce-scatter vs all-reduce): fp32 noise only.
    _assert_same_training(run, ddp, rtol=1e-4, atol=1e-5)
    # Each rank holds half of the weights and gradients DDP holds whole; the plain optimizer's Adam state is over
    # those halves, as large as the distributed optimizer's shard of it.
    assert run["bytes"]["weights"] == pytest.approx(ddp["bytes"]["weights"] / 2, rel=0.01)
    assert run["bytes"]["grads"] == pytest.approx(ddp["bytes"]["grads"] / 2, rel=0.01)
    assert run["bytes"]["optimizer"] == pytest.approx(ddp["bytes"]["optimizer"], rel=0.01)


@pytest.mark.slow
def test_tp2_dp2_fsdp2_reproduces_ddp(stdlib_shards, tmp_path, ddp):
    run = _probe(stdlib_shards, tmp_path, 4, tp=2, sp=True, **FSDP2)
    _assert_same_training(run, ddp, rtol=1e-3, atol=2e-5)
    assert run["bytes"]["weights"] == pytest.approx(ddp["bytes"]["weights"] / 4, rel=0.01)


# ------------------------------------------------------------------ checkpoints
def _run(shards, run_dir, world: int, faults: str = "", **parallel) -> dict:
    job = stdlib_job(shards, **parallel)
    job.train.iters = ITERS
    job.checkpoint.dir = os.path.join(str(run_dir), "checkpoints")
    return run_distributed(pretrain_probe, world, job, str(run_dir), faults)[0]


@pytest.mark.slow
def test_fsdp2_resumes_bitwise_and_its_checkpoints_load_into_ddp(stdlib_shards, tmp_path):
    straight = _run(stdlib_shards, tmp_path / "straight", 2, **FSDP2)
    stopped = _run(stdlib_shards, tmp_path / "stopped", 2, f"preempt_at={STOP_AT}", **FSDP2)
    assert len(stopped["losses"]) == STOP_AT
    # Exact resume: the checkpoint holds all of the state, each rank's rows cut back out of the whole tensors.
    resumed = _run(stdlib_shards, shutil.copytree(tmp_path / "stopped", tmp_path / "resumed"), 2, **FSDP2)
    assert resumed["first_step"] == STOP_AT + 1
    assert stopped["losses"] + resumed["losses"] == straight["losses"]
    # FSDP2 at DP=2 -> DDP with the distributed optimizer at DP=1: weights and Adam state resharded.
    in_ddp = _run(stdlib_shards, shutil.copytree(tmp_path / "stopped", tmp_path / "to_ddp"), 1)
    assert in_ddp["first_step"] == STOP_AT + 1
    assert in_ddp["losses"] == pytest.approx(straight["losses"][STOP_AT:], rel=1e-5)
    # (A DDP checkpoint is the same format: loading one into FSDP2 is what the resume above does.)


# ------------------------------------------------------------------ refusals
def test_fsdp2_refuses_what_it_cannot_do_all_at_once():
    job = JobConfig()
    job.data.mock = True
    for key, value in dict(fsdp="optim", fsdp_impl="torch", pp=2, overlap_grad_reduce=True).items():
        setattr(job.parallel, key, value)  # and the distributed optimizer, on by default
    job.model.untie_embeddings_and_output_weights = False
    job.precision.dtype = "bf16"
    with pytest.raises(MegatronSotaError) as refused:
        validate_job(job, 8, CPU_ONLY)
    found = [line for line in str(refused.value).splitlines() if "parallel.fsdp_impl=torch" in line]
    wanted = ("optim_grads_params", "distributed_optimizer=false", "pp=1", "precision.dtype=bf16",
              "untie_embeddings", "overlap_grad_reduce")
    assert len(found) == len(wanted)
    for words in wanted:
        assert any(words in line for line in found), words
    # The same job with FSDP2's needs met is accepted.
    for key, value in dict(pp=1, overlap_grad_reduce=False, **FSDP2).items():
        setattr(job.parallel, key, value)
    job.model.untie_embeddings_and_output_weights = True
    job.precision.dtype = "fp32"
    assert validate_job(job, 2, CPU_ONLY).dp == 2
