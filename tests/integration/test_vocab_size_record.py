"""A model.vocab_size the tokenizer overrides: the run warns, and config.yaml records the size the model was built for."""

from __future__ import annotations

import logging

from omegaconf import OmegaConf

from megatron_sota.config.job import JobConfig
from megatron_sota.training.trainer import pretrain


class _Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_stated_vocab_size_replaced_by_the_tokenizer_is_warned_and_recorded(tmp_path):
    job = JobConfig()
    job.model.vocab_size = 1000  # stated, but the tokenizer has 512 ids
    job.model.num_layers = 2
    job.tokenizer.type, job.tokenizer.vocab_size = "NullTokenizer", 512
    job.data.mock, job.data.num_workers = True, 0
    job.train.iters, job.train.seq_length, job.train.eval_interval = 1, 64, 0
    job.train.global_batch_size, job.train.micro_batch_size = 2, 2
    job.runtime.device, job.logging.tensorboard = "cpu", False
    kept = _Kept()
    logging.getLogger("megatron_sota").addHandler(kept)
    try:
        pretrain(job, str(tmp_path / "run"))
    finally:
        logging.getLogger("megatron_sota").removeHandler(kept)
    expected = (
        "model.vocab_size=1000 differs from the tokenizer's vocabulary of 512 tokens (tokenizer.type=NullTokenizer, "
        "tokenizer.vocab_size=512): the model is built for 512 and config.yaml records model.vocab_size=512"
    )
    assert any(expected in m for m in kept.messages), kept.messages
    recorded = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert recorded.model.vocab_size == 512 and recorded.tokenizer.vocab_size == 512
