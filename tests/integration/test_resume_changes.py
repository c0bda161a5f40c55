"""Resuming with another batch size or another LR schedule than the checkpoint's: the data position carries
over in samples, and a changed schedule is refused unless scheduler.changed_at_resume says whose wins."""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import List, Tuple

import pytest

from megatron_sota.checkpointing import paths
from megatron_sota.checkpointing.manager import read_common
from megatron_sota.config.job import JobConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.trainer import pretrain

pytestmark = pytest.mark.slow

BASE_ITERS, BASE_BATCH = 6, 4
REFERENCE_ITERS = 10
LR, MIN_LR_RATIO = 3e-4, 0.1


class TokenRecorder(Callback):
    """Records the token rows of every micro-batch the steps read, in reading order."""

    def __init__(self):
        self.rows = []

    def pre_train(self, trainer):
        objective = trainer.forward_step

        def recording(data_iterator, model):
            batch = next(data_iterator)
            self.rows += [row.tolist() for row in batch["tokens"]]
            return objective(iter([batch]), model)

        trainer.forward_step = recording


@pytest.fixture(scope="module")
def data(stdlib_shards, tmp_path_factory) -> Tuple[List[str], str]:
    """Two sources and their tokenizer: a blend's dataset holds exactly the samples asked for, so a train
    split sized too small runs out (megatron-core's one-source dataset rounds up to whole epochs)."""
    copy = os.path.join(tmp_path_factory.mktemp("second_source"), "copy_text_document")
    for suffix in (".bin", ".idx"):
        shutil.copy(stdlib_shards.prefix + suffix, copy + suffix)
    return [stdlib_shards.prefix, copy], stdlib_shards.tokenizer_model


def _job(data, iters: int, global_batch: int, **changes) -> JobConfig:
    job = JobConfig()
    job.data.paths, job.data.num_workers, job.runtime.device = data[0], 0, "cpu"
    job.tokenizer.type, job.tokenizer.model = "SentencePieceTokenizer", data[1]
    job.train.seq_length, job.train.micro_batch_size, job.train.global_batch_size = 64, 2, global_batch
    job.train.iters, job.train.eval_interval = iters, 0
    job.logging.tensorboard, job.logging.interval = False, 1
    job.optimizer.lr, job.scheduler.min_lr_ratio, job.scheduler.warmup_iters = LR, MIN_LR_RATIO, 2
    for dotted, value in changes.items():
        group, key = dotted.split("__")
        setattr(getattr(job, group), key, value)
    return job


def _lrs(run_dir) -> dict:
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return {row["step"]: row["lr"] for row in rows if "lr" in row}


@pytest.fixture(scope="module")
def base(data, tmp_path_factory) -> str:
    """The checkpoint of a finished 6-step run at global batch 4 (24 samples consumed)."""
    run_dir = tmp_path_factory.mktemp("base")
    pretrain(_job(data, BASE_ITERS, BASE_BATCH), str(run_dir))
    return paths.latest_complete(os.path.join(run_dir, "checkpoints"))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The same run, uninterrupted, to 10 steps: the samples it reads and its LR per step."""
    run_dir = tmp_path_factory.mktemp("reference")
    recorder = TokenRecorder()
    pretrain(_job(data, REFERENCE_ITERS, BASE_BATCH, checkpoint__save_at_end=False), str(run_dir), callbacks=[recorder])
    return recorder.rows, _lrs(run_dir)


def _resume(data, base: str, run_dir, iters: int, global_batch: int, **changes):
    recorder = TokenRecorder()
    job = _job(data, iters, global_batch, checkpoint__resume=base, **changes)
    summary = pretrain(job, str(run_dir), callbacks=[recorder])
    return summary, recorder.rows


@pytest.mark.parametrize("global_batch, iters", [(8, 8), (2, 14)], ids=["larger", "smaller"])
def test_a_changed_batch_size_reads_on_from_the_consumed_samples(data, base, reference, tmp_path, global_batch, iters):
    # Both resumes read samples 24..39: 2 steps of 8, or 8 steps of 2 (before, the split was sized
    # iters x batch: 16 samples for the smaller batch, so the first step hit the end of the data).
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("megatron_sota.training.resume")
    logger.addHandler(handler)
    try:
        summary, rows = _resume(data, base, tmp_path, iters, global_batch, scheduler__changed_at_resume="checkpoint")
    finally:
        logger.removeHandler(handler)
    assert len(summary.losses) == iters - BASE_ITERS
    reference_rows, _ = reference
    consumed = BASE_ITERS * BASE_BATCH
    assert rows == reference_rows[consumed : consumed + (iters - BASE_ITERS) * global_batch]
    saved = read_common(paths.latest_complete(os.path.join(tmp_path, "checkpoints")))["progress"]
    assert saved == {"iteration": iters, "consumed_samples": consumed + (iters - BASE_ITERS) * global_batch}
    said = " ".join(record.getMessage() for record in records)
    assert f"train.global_batch_size is {global_batch}, the checkpoint's was {BASE_BATCH}" in said
    assert f"from sample {consumed}" in said


def test_extending_a_finished_schedule_is_refused_naming_both_schedules(data, base, tmp_path):
    with pytest.raises(MegatronSotaError) as info:
        _resume(data, base, tmp_path, REFERENCE_ITERS, BASE_BATCH)
    message = str(info.value)
    assert "another LR schedule" in message and "iteration the decay ends" in message
    assert f"checkpoint {BASE_ITERS}, config {REFERENCE_ITERS}" in message
    assert f"{LR * MIN_LR_RATIO:.3e} on the checkpoint's schedule" in message
    assert "scheduler.changed_at_resume=checkpoint" in message and "scheduler.changed_at_resume=config" in message
    assert not os.path.exists(tmp_path / "config.yaml")  # refused before anything was written


def test_the_checkpoints_schedule_keeps_its_floor(data, base, tmp_path):
    _resume(data, base, tmp_path, REFERENCE_ITERS, BASE_BATCH, scheduler__changed_at_resume="checkpoint")
    lrs = _lrs(tmp_path)
    assert sorted(lrs) == list(range(BASE_ITERS + 1, REFERENCE_ITERS + 1))
    assert lrs == pytest.approx({step: LR * MIN_LR_RATIO for step in lrs}, rel=1e-12)


def test_the_configs_schedule_gives_the_lr_of_an_uninterrupted_run(data, base, reference, tmp_path):
    _resume(data, base, tmp_path, REFERENCE_ITERS, BASE_BATCH, scheduler__changed_at_resume="config")
    _, reference_lrs = reference
    new_steps = range(BASE_ITERS + 1, REFERENCE_ITERS + 1)
    assert _lrs(tmp_path) == {step: reference_lrs[step] for step in new_steps}
    assert reference_lrs[BASE_ITERS + 1] > 2 * LR * MIN_LR_RATIO  # the config's schedule has not decayed yet


def test_a_checkpoint_past_train_iters_is_refused(data, base, tmp_path):
    with pytest.raises(MegatronSotaError) as info:
        _resume(data, base, tmp_path, BASE_ITERS - 2, BASE_BATCH)
    assert f"is at iteration {BASE_ITERS}, past train.iters={BASE_ITERS - 2}" in str(info.value)
