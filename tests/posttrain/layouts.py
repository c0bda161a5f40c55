"""Post-training at TP=2, PP=2 and DP=2 against one process: the layouts, the job at a layout, and the run probe
the three objectives' parallel tests share."""

from __future__ import annotations

from typing import Callable

from megatron_sota.config.job import JobConfig

LAYOUTS = [{"tp": 2}, {"pp": 2}, {"micro_batch_size": 1}]
"""Two ranks each: TP=2, PP=2, and DP=2 (one sample per micro-batch, so one process takes two micro-batches)."""
LAYOUT_IDS = ["tp2", "pp2", "dp2"]


def at_layout(job: JobConfig, micro_batch_size: int = 2, **parallel) -> JobConfig:
    """`job` with `parallel.<key>=value` for each of `parallel` and its micro-batch size."""
    job.train.micro_batch_size = micro_batch_size
    for key, value in parallel.items():
        setattr(job.parallel, key, value)
    return job


def posttrain_probe(rank: int, job: JobConfig, run_dir: str, use_fake_data: Callable[[], None]) -> dict:
    """One rank of `job` run by posttrain() on the fake data `use_fake_data` installs: its losses and metrics."""
    from megatron_sota.posttrain.run import posttrain

    use_fake_data()
    summary = posttrain(job, run_dir)
    return {"losses": summary.losses, "val_losses": summary.val_losses, "val_metrics": summary.val_metrics}
