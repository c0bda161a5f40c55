"""A model.vocab_size the tokenizer overrides: config.yaml records the size the model was built for, and a
value someone stated (not the preset's nominal one) is replaced with a warning."""

from __future__ import annotations

import logging

import pytest
from omegaconf import OmegaConf

from megatron_sota.config.job import JobConfig
from megatron_sota.training.trainer import pretrain

WARNING = (
    "model.vocab_size=1000 differs from the tokenizer's vocabulary of 512 tokens (tokenizer.type=NullTokenizer, "
    "tokenizer.vocab_size=512): the model is built for 512 and config.yaml records model.vocab_size=512; "
    "set model.vocab_size=512 to silence this warning"
)


class _Kept(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("stated, warned", [(1000, True), (8000, False)], ids=["stated", "tiny_preset_nominal"])
def test_vocab_size_replaced_by_the_tokenizer_is_recorded_and_a_stated_one_warned(stated, warned, tmp_path):
    job = JobConfig()  # model.name tiny, whose preset's nominal vocabulary is 8000
    job.model.vocab_size, job.model.num_layers = stated, 2
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
    vocab_warnings = [m for m in kept.messages if "model.vocab_size" in m]
    assert vocab_warnings == ([WARNING] if warned else []), kept.messages
    recorded = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert recorded.model.vocab_size == 512 and recorded.tokenizer.vocab_size == 512
