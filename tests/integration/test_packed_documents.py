"""data.reset_attention_mask / reset_position_ids / eod_mask_loss: the dataset honours them, training and
validation change with them, and the layouts that cannot take them are refused."""

from __future__ import annotations

import pytest

from megatron_sota.config.job import JobConfig
from megatron_sota.config.machine import Machine
from megatron_sota.config.validation import validate_job
from megatron_sota.errors import MegatronSotaError
from tests.random_shards import VOCAB, write_shard

EOD = VOCAB - 1
FLAGS = ("reset_attention_mask", "reset_position_ids", "eod_mask_loss")


@pytest.fixture(scope="module")
def shard(tmp_path_factory) -> str:
    """40-token documents ending in eod, so every 64-token row packs two or three of them."""
    return write_shard(str(tmp_path_factory.mktemp("packed") / "docs_text_document"), 200, eod=True)


def _job(shard: str, **flags) -> JobConfig:
    job = JobConfig()
    job.tokenizer.type, job.tokenizer.vocab_size, job.model.vocab_size = "NullTokenizer", VOCAB, VOCAB
    job.data.paths, job.data.split, job.data.num_workers = [shard], [8.0, 2.0, 0.0], 0
    for key, value in flags.items():
        setattr(job.data, key, value)
    job.runtime.device = "cpu"
    job.model.num_layers = 2
    job.train.seq_length, job.train.micro_batch_size, job.train.global_batch_size = 64, 2, 4
    job.train.iters, job.train.eval_interval, job.train.eval_iters = 2, 2, 1
    # lr=0: every run keeps the same initial weights, so a difference in a loss comes from the flags alone.
    job.optimizer.lr, job.scheduler.warmup_iters = 0.0, 1
    job.logging.tensorboard = False
    job.checkpoint.save_at_end = False
    return job


def test_the_dataset_restarts_positions_and_masks_the_loss_at_eod_without_a_dense_mask(shard, tmp_path):
    from megatron_sota.data.blend import SampleCounts, build_datasets
    from megatron_sota.data.mix import resolve_blend
    from megatron_sota.data.tokenizer import build_configured_tokenizer
    from megatron_sota.runtime.session import distributed_session

    job = _job(shard, **dict.fromkeys(FLAGS, True))
    tokenizer = build_configured_tokenizer(job.tokenizer, VOCAB)
    with distributed_session(job.parallel, "cpu", 1, seed=0):  # the dataset builder asks for ranks
        train, _, _ = build_datasets(
            job.data, tokenizer, 64, 0, SampleCounts(8, 0, 0), str(tmp_path), resolve_blend(job.data, VOCAB)
        )
        sample = train[0]
    eods = (sample["tokens"] == EOD).nonzero().squeeze(1).tolist()
    assert eods and "attention_mask" not in sample
    assert sample["loss_mask"][eods].eq(0).all() and sample["loss_mask"].sum() == 64 - len(eods)
    assert sample["position_ids"][eods[0] + 1] == 0


def test_training_and_validation_change_with_document_masking(shard, tmp_path):
    from megatron_sota.training.trainer import pretrain

    runs = {
        name: pretrain(_job(shard, **flags), str(tmp_path / name))
        for name, flags in {
            "default": {},
            "documents": {"reset_attention_mask": True},
            "all": dict.fromkeys(FLAGS, True),
        }.items()
    }
    for summary in runs.values():
        assert len(summary.losses) == 2 and len(summary.val_losses) == 1 and summary.exit_code == 0
    default, documents = runs["default"], runs["documents"]
    # The same weights, tokens and loss mask: only attention changed, in training and in validation.
    assert documents.losses != default.losses and documents.val_losses != default.val_losses
    assert runs["all"].losses[0] != documents.losses[0]  # eod_mask_loss drops the eod positions


def test_document_masking_is_refused_with_transformer_engines_layer_spec():
    job = JobConfig()
    job.data.mock, job.data.reset_attention_mask = True, True
    with pytest.raises(MegatronSotaError, match="data.reset_attention_mask=true needs the local layer spec's SDPA"):
        validate_job(job, 1, Machine(cuda=True, transformer_engine=True))
    validate_job(job, 1, Machine(cuda=False, transformer_engine=False))


@pytest.mark.slow
@pytest.mark.parametrize("parallel", [{"pp": 2}, {"tp": 2, "sp": True}, {"cp": 2}], ids=["pp2", "tp2_sp", "cp2"])
def test_document_masking_trains_alike_under_pipeline_tensor_and_context_parallelism(shard, tmp_path, parallel):
    """Every pipeline stage gets the ids, sequence parallelism hands core attention the whole sequence, and
    context parallelism cuts the ids with the tokens (40-token documents across 16-token CP chunks)."""
    from megatron_sota.runtime.local_ranks import run_distributed
    from tests.distributed.probes import pretrain_probe

    job = _job(shard, reset_attention_mask=True)
    job.optimizer.lr = 1e-3
    single = run_distributed(pretrain_probe, 1, job, str(tmp_path / "single"))[0]
    for key, value in parallel.items():
        setattr(job.parallel, key, value)
    split = run_distributed(pretrain_probe, 2, job, str(tmp_path / "split"))[0]
    assert split["losses"] == pytest.approx(single["losses"], rel=1e-5)
    assert split["val_losses"] == pytest.approx(single["val_losses"], rel=1e-5)
