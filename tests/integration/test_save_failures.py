"""Saves that used to throw a run away: a checkpoint directory that cannot be written (refused before anything is
built), a disk that fills up during a save (named, the previous checkpoint left in charge and resumable), and an
fp16 save before the first real optimizer step (saved and resumed as step 0)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys

import pytest
from torch.distributed.checkpoint.api import CheckpointException

from megatron_sota.checkpointing.storage import save_failure
from megatron_sota.config.job import JobConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.trainer import pretrain
from tests.integration.train_command import run_train

FAST = [
    "data.mock=true", "data.num_workers=0", "runtime.device=cpu", "train.seq_length=64", "train.global_batch_size=4",
    "train.micro_batch_size=2", "train.eval_interval=0", "logging.interval=1", "logging.tensorboard=false",
    # A schedule that does not depend on train.iters, so a resume with fewer iterations keeps it.
    "scheduler.warmup_iters=1", "scheduler.decay_iters=20",
]
TRACKER = "latest_checkpointed_iteration.txt"
# The tiny model's checkpoint (fp32 weights and AdamW moments) takes 108 MiB: one fits in this much, two do not.
ONE_CHECKPOINT_FITS = "160m"


def _job(**changes) -> JobConfig:
    job = JobConfig()
    job.data.mock, job.data.num_workers = True, 0
    job.runtime.device = "cpu"
    job.train.seq_length, job.train.micro_batch_size, job.train.global_batch_size = 64, 2, 4
    job.train.eval_interval = 0
    job.logging.tensorboard = False
    for dotted, value in changes.items():
        group, key = dotted.split("__")
        setattr(getattr(job, group), key, value)
    return job


@contextlib.contextmanager
def _tmpfs(path, options: str):
    """A filesystem of our own at `path`: a real full disk (ENOSPC) or a read-only one (EROFS), for root too."""
    os.makedirs(path)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
        refusal = mounted.stderr.strip() if mounted.returncode else None
    except FileNotFoundError:
        refusal = "no mount command"
    if refusal is not None:
        pytest.skip(f"mounting a small tmpfs needs root with CAP_SYS_ADMIN: {refusal}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def read_only_dir(tmp_path):
    """chmod stops every user but root; root is stopped by a read-only filesystem."""
    path = tmp_path / "read_only"
    if os.geteuid() != 0:
        path.mkdir()
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
    else:
        with _tmpfs(path, "ro,size=1m"):
            yield path


@pytest.fixture
def small_disk(tmp_path):
    with _tmpfs(tmp_path / "small_disk", f"size={ONE_CHECKPOINT_FITS}") as path:
        yield path


def _refused_before_anything_is_built(job: JobConfig, run_dir) -> str:
    with pytest.raises(MegatronSotaError) as info:
        pretrain(job, str(run_dir))
    # Not even config.yaml: the check comes before the first write and before any process group.
    assert not os.path.exists(run_dir), os.listdir(run_dir)
    return str(info.value)


# ----------------------------------------------------------------- 1: unwritable checkpoint directory
def test_checkpoint_dir_below_a_file_is_refused_before_the_model_is_built(tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a directory\n")
    target = tmp_path / "notes.txt" / "checkpoints"
    message = _refused_before_anything_is_built(_job(checkpoint__dir=str(target), train__iters=2), tmp_path / "run")
    assert f"checkpoint.dir={target} cannot be written (Not a directory [ENOTDIR]: {target})" in message
    assert "set checkpoint.dir" in message


def test_read_only_checkpoint_dir_is_refused_before_the_model_is_built(tmp_path, read_only_dir):
    target = read_only_dir / "checkpoints"
    message = _refused_before_anything_is_built(_job(checkpoint__dir=str(target), train__iters=2), tmp_path / "run")
    reason = "Permission denied [EACCES]" if os.geteuid() != 0 else "Read-only file system [EROFS]"
    assert f"checkpoint.dir={target} cannot be written ({reason}: {target})" in message


def test_a_run_that_never_saves_does_not_need_a_writable_checkpoint_dir(tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a directory\n")
    job = _job(
        checkpoint__dir=str(tmp_path / "notes.txt" / "checkpoints"), checkpoint__save_at_end=False,
        checkpoint__exit_on_signal=False, train__iters=1,
    )
    assert len(pretrain(job, str(tmp_path / "run")).losses) == 1


# ----------------------------------------------------------------- 2: disk full during a save
def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return {row["step"]: row for row in map(json.loads, handle) if "loss" in row}


def _assert_disk_full_reported(result, ckpt, previous: int, failed: int):
    assert result.returncode != 0
    assert f"checkpoint iter_{failed:07d} was not saved: no space left on device (" in result.stderr
    assert f"free in {ckpt}; a checkpoint of this run takes about 108.0 MiB)" in result.stderr
    assert f"The previous checkpoint {ckpt}/iter_{previous:07d} is intact and {TRACKER} still names it" in result.stderr
    assert sorted(os.listdir(ckpt)) == [f"iter_{previous:07d}", TRACKER]  # the partial save is gone
    assert open(ckpt / TRACKER).read().strip() == str(previous)


@pytest.mark.slow
def test_disk_full_during_a_save_is_named_and_the_previous_checkpoint_resumes(tmp_path, small_disk):
    run_dir, ckpt = tmp_path / "run", small_disk / "checkpoints"
    full = run_train([*FAST, "train.iters=4", "checkpoint.interval=2", f"checkpoint.dir={ckpt}"], run_dir)
    assert f"saved checkpoint {ckpt}/iter_0000002" in full.stdout
    _assert_disk_full_reported(full, ckpt, previous=2, failed=4)
    assert full.returncode == 2 and "Traceback" not in full.stderr
    lost = _metrics(run_dir)

    resumed = run_train([*FAST, "train.iters=3", "checkpoint.save_at_end=false", f"checkpoint.dir={ckpt}"], run_dir)
    assert resumed.returncode == 0
    assert f"resumed from {ckpt}/iter_0000002 at iteration 2" in resumed.stdout
    assert _metrics(run_dir)[3]["loss"] == lost[3]["loss"]  # bitwise: the checkpoint holds the whole state


@pytest.mark.slow
def test_disk_full_during_a_background_save_is_named_when_it_completes(tmp_path, small_disk):
    run_dir, ckpt = tmp_path / "run", small_disk / "checkpoints"
    args = [*FAST, "train.iters=6", "checkpoint.interval=2", "checkpoint.async_save=true", f"checkpoint.dir={ckpt}"]
    result = run_train(args, run_dir)
    _assert_disk_full_reported(result, ckpt, previous=2, failed=4)
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.slow
def test_disk_full_under_torchrun_stops_every_rank_with_its_message(tmp_path, small_disk):
    run_dir, ckpt = tmp_path / "run", small_disk / "checkpoints"
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m")
    result = run_train([*FAST, "train.iters=4", "checkpoint.interval=2", f"checkpoint.dir={ckpt}"], run_dir, launcher)
    _assert_disk_full_reported(result, ckpt, previous=2, failed=4)
    assert "[rank 0] error: checkpoint iter_0000004 was not saved: no space left on device" in result.stderr
    assert "[rank 1] error: checkpoint iter_0000004 was not saved: writing it failed (rank 0's message says why)" in result.stderr


def _previous_checkpoint(tmp_path, step: int):
    save_dir = tmp_path / "checkpoints"
    os.makedirs(save_dir / f"iter_{step:07d}")
    (save_dir / TRACKER).write_text(f"{step}\n")
    return save_dir


def test_a_write_error_other_than_a_full_disk_is_reported_in_the_writers_words(tmp_path):
    save_dir = _previous_checkpoint(tmp_path, 2)
    denied = PermissionError(errno.EACCES, "Permission denied", "/ckpt/iter_0000004.partial/__0_0.distcp")
    message = str(save_failure(str(save_dir), 4, CheckpointException("write", {0: (denied, None)}), expected_bytes=1))
    assert message.startswith("checkpoint iter_0000004 was not saved: writing it failed.")
    assert f"The previous checkpoint {save_dir}/iter_0000002 is intact and {TRACKER} still names it" in message
    assert "(The writer reported: rank 0: PermissionError: [Errno 13] Permission denied: '/ckpt/iter_0000004" in message


def test_a_full_disk_is_named_from_the_errno_even_where_space_is_free_again(tmp_path):
    save_dir = _previous_checkpoint(tmp_path, 2)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as cause:
            raise RuntimeError("unexpected pos 704 vs 598") from cause
    except RuntimeError as err:
        message = str(save_failure(str(save_dir), 4, err, expected_bytes=1))
    assert "checkpoint iter_0000004 was not saved: no space left on device (" in message
    assert "(The writer reported: RuntimeError: unexpected pos 704 vs 598)" in message


# ----------------------------------------------------------------- 5: fp16 save before the first real step
class StepRecorder(Callback):
    def __init__(self):
        self.skipped = {}

    def post_step(self, trainer, outcome):
        self.skipped[outcome.step] = outcome.result.skipped


@pytest.mark.parametrize("distributed_optimizer", [True, False])
def test_fp16_save_before_the_first_real_step_resumes_as_step_0(tmp_path, distributed_optimizer):
    # With this loss scale the tiny model's first fp16 steps overflow: the save at step 2 comes before
    # any optimizer step, and the resumed run must reach the same first updates as the run that went on.
    changes = dict(
        precision__dtype="fp16", precision__initial_loss_scale=8192.0, train__iters=5,
        parallel__distributed_optimizer=distributed_optimizer,
    )
    straight, straight_steps = _job(**changes, checkpoint__interval=2, checkpoint__save_at_end=False), StepRecorder()
    went_on = pretrain(straight, str(tmp_path / "straight"), callbacks=[straight_steps])
    assert straight_steps.skipped[1] and straight_steps.skipped[2], "the save must come before any real step"

    saved = str(tmp_path / "straight" / "checkpoints" / "iter_0000002")
    resumed_steps = StepRecorder()
    resumed = pretrain(_job(**changes, checkpoint__resume=saved, checkpoint__save_at_end=False), str(tmp_path / "resumed"), callbacks=[resumed_steps])
    assert resumed.first_step == 3
    assert not all(resumed_steps.skipped.values()), f"the resumed run never updated: {resumed_steps.skipped}"
    assert resumed.losses == went_on.losses[2:]  # bitwise, the steps after the first update included
