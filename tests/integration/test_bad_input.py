"""Bad input stops a run before training with one message naming file/key, expected and found,
and before anything is written to the run directory."""

from __future__ import annotations

import os
import shutil

import pytest

from megatron_sota.config.job import JobConfig
from megatron_sota.errors import MegatronSotaError
from megatron_sota.training.trainer import pretrain


def _job(shards, **changes) -> JobConfig:
    job = JobConfig()
    job.tokenizer.type = "SentencePieceTokenizer"
    job.tokenizer.model = shards.tokenizer_model
    job.data.paths = [shards.prefix]
    job.runtime.device = "cpu"
    for dotted, value in changes.items():
        group, key = dotted.split("__")
        setattr(getattr(job, group), key, value)
    return job


def _refused(job: JobConfig, run_dir) -> str:
    with pytest.raises(MegatronSotaError) as info:
        pretrain(job, str(run_dir))
    leftovers = os.listdir(run_dir) if os.path.isdir(run_dir) else []
    assert not [f for f in leftovers if f != "checkpoints"], f"run dir was written to: {leftovers}"
    return str(info.value)


def test_missing_data_prefix_names_the_file_and_key(stdlib_shards, tmp_path):
    missing = str(tmp_path / "nowhere" / "corpus_text_document")
    message = _refused(_job(stdlib_shards, data__paths=[missing]), tmp_path / "run")
    assert missing in message and "data.paths" in message


def test_index_with_wrong_magic_names_expected_and_found(stdlib_shards, tmp_path):
    prefix = str(tmp_path / "corrupt_text_document")
    shutil.copy(stdlib_shards.prefix + ".bin", prefix + ".bin")
    with open(stdlib_shards.prefix + ".idx", "rb") as src, open(prefix + ".idx", "wb") as dst:
        dst.write(b"NOTMEGA\x00\x00" + src.read()[9:])
    message = _refused(_job(stdlib_shards, data__paths=[prefix]), tmp_path / "run")
    assert prefix + ".idx" in message and "MMIDIDX" in message and "NOTMEGA" in message


def test_tokenizer_smaller_than_data_vocabulary_is_refused(stdlib_shards, tmp_path):
    job = _job(stdlib_shards, tokenizer__type="NullTokenizer", tokenizer__model=None, tokenizer__vocab_size=500)
    message = _refused(job, tmp_path / "run")
    assert "500" in message and stdlib_shards.prefix in message


def test_preset_that_does_not_fit_the_layout_is_refused(stdlib_shards, tmp_path):
    message = _refused(_job(stdlib_shards, parallel__pp=3), tmp_path / "run")
    assert "model.num_layers=4 is not divisible by parallel.pp*parallel.vpp = 3*1 = 3" in message


def test_run_dir_holding_checkpoints_is_not_written_when_resume_is_never(stdlib_shards, tmp_path):
    os.makedirs(tmp_path / "run" / "checkpoints" / "iter_0000100")
    message = _refused(_job(stdlib_shards, checkpoint__resume="never"), tmp_path / "run")
    assert "already holds checkpoints (iter_0000100)" in message and "checkpoint.resume=auto" in message


def test_tracker_naming_a_missing_iteration_is_refused(stdlib_shards, tmp_path):
    ckpt = tmp_path / "run" / "checkpoints"
    os.makedirs(ckpt / "iter_0000010")
    (ckpt / "latest_checkpointed_iteration.txt").write_text("20\n")
    message = _refused(_job(stdlib_shards), tmp_path / "run")
    assert "latest_checkpointed_iteration.txt names iteration 20" in message and "iter_0000020 does not exist" in message
    assert "[10]" in message


def test_resume_from_a_missing_path_is_refused(stdlib_shards, tmp_path):
    missing = str(tmp_path / "no_such_checkpoint")
    message = _refused(_job(stdlib_shards, checkpoint__resume=missing), tmp_path / "run")
    assert missing in message and "no such file or directory" in message


def test_resume_from_a_foreign_directory_is_refused(stdlib_shards, tmp_path):
    foreign = tmp_path / "foreign"
    os.makedirs(foreign)
    (foreign / "weights.bin").write_bytes(b"\x00" * 16)
    message = _refused(_job(stdlib_shards, checkpoint__resume=str(foreign)), tmp_path / "run")
    assert f"{foreign}: not a checkpoint" in message and "metadata.json" in message


def test_every_config_refusal_comes_in_one_message_before_any_process_group(tmp_path, monkeypatch):
    """Machine-dependent refusals (Transformer Engine on CPU, fp8, context parallelism, local-spec
    kernels with TE), loop settings and the eval task files: one error, and no process group was built."""
    import torch.distributed

    def no_process_group(*args, **kwargs):
        raise AssertionError("a process group was built before the config was refused")

    monkeypatch.setattr(torch.distributed, "init_process_group", no_process_group)
    job = JobConfig()
    job.data.mock = True
    job.runtime.device = "cpu"
    job.model.transformer_impl = "transformer_engine"
    job.precision.fp8 = "hybrid"
    job.kernels.rms_norm = job.kernels.compile_layers = True
    job.scheduler.wsd_decay_style = "square"
    job.logging.interval = 0
    job.eval.tasks, job.eval.interval = ["no_such_task"], 10
    message = _refused(job, tmp_path / "run")
    for expected in (
        "model.transformer_impl=transformer_engine needs a CUDA device",
        "precision.fp8=hybrid needs Transformer Engine",
        "kernels.rms_norm=true applies to the local layer spec",
        "kernels.compile_layers=true applies to the local layer spec",
        "scheduler.wsd_decay_style must be one of",
        "logging.interval must be >= 1, got 0",
        "eval.tasks: task 'no_such_task'",
    ):
        assert expected in message, message
    assert not torch.distributed.is_initialized()
