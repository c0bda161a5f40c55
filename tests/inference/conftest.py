"""Shared fixtures of the generation tests: two prompts of equal length, three of different lengths (the trained
checkpoint is tests/conftest.py's)."""

from __future__ import annotations

from typing import List

import pytest
import torch



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
