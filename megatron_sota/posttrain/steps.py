"""How many steps and validation batches a post-training run takes, from its rows and posttrain.epochs.

Shared by the objectives; it changes only train.iters (when 0) and train.eval_iters, and logs both.
"""

from __future__ import annotations

import dataclasses
import logging
import math

from megatron_sota.config.job import JobConfig
from megatron_sota.errors import MegatronSotaError

logger = logging.getLogger(__name__)


def derive_steps(job: JobConfig, train_rows: int, valid_rows: int) -> JobConfig:
    """train.iters=0 becomes epochs x train_rows // global batch (full batches only); with validation rows,
    train.eval_iters becomes the batches that hold them all once (the last one topped up with empty rows)."""
    t, epochs = job.train, job.posttrain.epochs
    iters, eval_iters = t.iters, t.eval_iters
    if iters == 0:
        iters = epochs * train_rows // t.global_batch_size
        if iters < 1:
            raise MegatronSotaError(
                f"posttrain.epochs={epochs} x {train_rows} rows of posttrain.train_files fill no global batch of "
                f"train.global_batch_size={t.global_batch_size}: lower the batch size, add data or set train.iters"
            )
        logger.info(
            f"train.iters={iters}: posttrain.epochs={epochs} x {train_rows} rows / "
            f"train.global_batch_size={t.global_batch_size}"
        )
    if valid_rows:
        eval_iters = math.ceil(valid_rows / t.global_batch_size)
        logger.info(f"train.eval_iters={eval_iters}: every validation reads the {valid_rows} validation rows once")
    return dataclasses.replace(job, train=dataclasses.replace(t, iters=iters, eval_iters=eval_iters))
