"""Shared fixtures of the generation tests: one trained checkpoint, two prompts of equal length, three of different lengths."""

from __future__ import annotations

import os
from typing import List

import pytest
import torch

from megatron_sota.runtime.local_ranks import run_distributed
from tests.distributed.probes import pretrain_probe
from tests.distributed.jobs import stdlib_job


@pytest.fixture(scope="session")
def checkpoint(stdlib_shards, tmp_path_factory) -> str:
    """tiny trained 20 steps on the stdlib corpus (a trained model: no near-ties between the top tokens)."""
    run_dir = str(tmp_path_factory.mktemp("gen"))
    job = stdlib_job(stdlib_shards)
    job.train.iters = 20
    run_distributed(pretrain_probe, 1, job, run_dir)
    return os.path.join(run_dir, "checkpoints")


@pytest.fixture(scope="session")
def prompts(stdlib_shards) -> torch.Tensor:
    from megatron_sota.data.tokenizer import build_tokenizer

    tokenizer = build_tokenizer("SentencePieceTokenizer", stdlib_shards.tokenizer_model)
    texts = ("def parse(self, text):\n    return self.parser.parse(text)\n", "import os\nimport sys\n\nclass Foo:\n    def __init__(self):")
    return torch.tensor([tokenizer.tokenize(text)[:10] for text in texts])


@pytest.fixture(scope="session")
def ragged_prompts(stdlib_shards) -> List[List[int]]:
    """Three prompts of 7, 15 and 3 tokens: a batch of them is left padded by 8, 0 and 12."""
    from megatron_sota.data.tokenizer import build_tokenizer

    tokenizer = build_tokenizer("SentencePieceTokenizer", stdlib_shards.tokenizer_model)
    texts = (
        "def parse(self, text):\n    return self.parser.parse(text)\n",
        "import os\nimport sys\n\nclass Foo:\n    def __init__(self):\n        self.name = None\n",
        "for i in range(10):\n    print(i)\n",
    )
    ids = [tokenizer.tokenize(text)[:n] for text, n in zip(texts, (7, 15, 3))]
    assert [len(row) for row in ids] == [7, 15, 3]
    return ids
