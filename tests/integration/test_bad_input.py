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


def test_run_dir_holding_another_runs_checkpoints_is_not_written(stdlib_shards, tmp_path):
    os.makedirs(tmp_path / "run" / "checkpoints" / "iter_0000100")
    message = _refused(_job(stdlib_shards), tmp_path / "run")
    assert "already holds checkpoints (iter_0000100)" in message and "checkpoint.resume=true" in message
