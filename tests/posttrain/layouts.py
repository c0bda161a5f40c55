"""Post-training at TP=2, PP=2 and DP=2 against one process: the layouts, the job at a layout, and the run and
gradient probes (with the gradient comparison) the three objectives' parallel tests share."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from megatron_sota.config.job import JobConfig
from tests.distributed.probes import layout_probe

LAYOUTS = [{"tp": 2}, {"pp": 2}, {"micro_batch_size": 1}]
"""Two ranks each: TP=2, PP=2, and DP=2 (one sample per micro-batch, so one process takes two micro-batches)."""
LAYOUT_IDS = ["tp2", "pp2", "dp2"]


def at_layout(job: JobConfig, micro_batch_size: int = 2, **parallel) -> JobConfig:
    """`job` with `parallel.<key>=value` for each of `parallel` and its micro-batch size."""
    job.train.micro_batch_size = micro_batch_size
    for key, value in parallel.items():
        setattr(job.parallel, key, value)
    return job


def for_gradients(job: JobConfig) -> JobConfig:
    """`job` without the distributed optimizer, so that every DP rank holds the whole reduced gradient that
    gradients_probe compares (layout_probe)."""
    job.parallel.distributed_optimizer = False
    return job


def posttrain_probe(rank: int, job: JobConfig, run_dir: str, use_fake_data: Callable[[], None]) -> dict:
    """One rank of `job` run by posttrain() on the fake data `use_fake_data` installs: its losses and metrics."""
    from megatron_sota.posttrain.run import posttrain

    use_fake_data()
    summary = posttrain(job, run_dir)
    return {"losses": summary.losses, "val_losses": summary.val_losses, "val_metrics": summary.val_metrics}


def gradients_probe(rank: int, job: JobConfig, run_dir: str, use_fake_data: Callable[[], None]) -> dict:
    """layout_probe's loss and full gradients of the first global batch, of `job`'s post-training objective
    (its hooks run as in the trainer) on the fake data `use_fake_data` installs."""
    from megatron_sota.posttrain.run import build_objective

    use_fake_data()
    return layout_probe(rank, job, run_dir, 0, build_objective(job))


def assert_same_gradients(run: dict, reference: dict) -> None:
    """gradients_probe's `run` at a parallel layout has one process's first loss and every gradient, none zero."""
    assert run["first_loss"] == pytest.approx(reference["first_loss"], rel=1e-5)
    assert set(run["grads"]) == set(reference["grads"])
    assert all(g.abs().max() > 0 for g in reference["grads"].values())
    # atol relative to each gradient's largest entry: float32 sums in another order (1 thread per rank against 2, and
    # another heap layout, hence other SIMD alignment) move entries near zero by a few 1e-6 of that (2.5e-7 of 0.063
    # for the embedding, seen once in a full suite run); a lost or doubled token's contribution is orders larger.
    for name, expected in reference["grads"].items():
        scale = expected.abs().max().item()
        torch.testing.assert_close(run["grads"][name], expected, rtol=1e-4, atol=2e-5 * scale, msg=lambda m: f"{name}: {m}")
