"""Encoded-like SFT examples built straight from token ids, and the small CPU job that trains on them.

Stands in for the chat-template layer (posttrain/chat_template.py) so that the SFT data path and the
trainer can be tested on their own; it must not template or tokenize anything.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Tuple

import torch

from megatron_sota.config.job import JobConfig
from megatron_sota.config.posttrain import PosttrainConfig
from megatron_sota.training.callbacks.base import Callback

VOCAB = 128
EOD = VOCAB - 1  # NullTokenizer's eod: the padding token


@dataclass(frozen=True)
class Example:
    ids: Tuple[int, ...]
    trained: Tuple[bool, ...]
    where: str


def example(ids, prompt: int, where: str = "test.jsonl:1") -> Example:
    """`prompt` untrained tokens, then trained ones (the assistant turn)."""
    ids = tuple(int(i) for i in ids)
    return Example(ids, tuple(i >= prompt for i in range(len(ids))), where)


def examples(count: int, seed: int, longest: int = 30) -> list:
    generator = torch.Generator().manual_seed(seed)
    made = []
    for line in range(count):
        n = int(torch.randint(4, longest + 1, (1,), generator=generator))
        ids = torch.randint(0, EOD, (n,), generator=generator).tolist()
        made.append(example(ids, n // 2, f"data.jsonl:{line + 1}"))
    return made


def fake_encode_files(paths, chat_template, assistant_only, tokenizer, max_tokens) -> list:
    """posttrain.sft_data.encode_files for files named train*/valid*: 40 / 12 examples of their own seeds."""
    return [e for path in paths for e in examples(40 if "train" in path else 12, seed=len(path))]


def replace_reader(module: str, name: str, fake, monkeypatch=None) -> None:
    """Sets `module`.`name` (a post-training objective's file reader) to `fake` in this process. In-process tests
    pass pytest's `monkeypatch`, which puts the real reader back after the test; a probe's own process
    (run_distributed) passes none."""
    target = importlib.import_module(module)
    if monkeypatch is None:
        setattr(target, name, fake)
    else:
        monkeypatch.setattr(target, name, fake)


def use_fake_encodings(monkeypatch=None) -> None:
    """In this process, SFT reads fake_encode_files' examples (multi-rank probes call it in each rank). See replace_reader."""
    replace_reader("megatron_sota.posttrain.sft", "encode_files", fake_encode_files, monkeypatch)


def sft_job(**posttrain) -> JobConfig:
    job = JobConfig()
    job.posttrain = PosttrainConfig(train_files=["train.jsonl"], **posttrain)
    job.tokenizer.type, job.tokenizer.vocab_size, job.model.vocab_size = "NullTokenizer", VOCAB, VOCAB
    job.data.num_workers = 0
    job.runtime.device = "cpu"
    job.model.num_layers = 2
    job.train.seq_length, job.train.micro_batch_size, job.train.global_batch_size = 64, 2, 8
    job.train.iters, job.train.eval_interval = 0, 0
    job.optimizer.lr, job.scheduler.warmup_iters = 1e-3, 1
    job.logging.tensorboard, job.logging.interval = False, 1
    job.checkpoint.save_at_end = False
    return job


class StopAt(Callback):
    """Saves and stops after `step`, as a preempted job would."""

    def __init__(self, step: int):
        self.step = step

    def post_step(self, trainer, outcome):
        if outcome.step == self.step:
            trainer.save()
            trainer.stop("test stop", 75)
