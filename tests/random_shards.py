"""Megatron .bin/.idx shards of random token ids, read with NullTokenizer, for the blend tests.

Writes data only; it must not build datasets or configs.
"""

from __future__ import annotations

import numpy
import torch
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

VOCAB = 1000
"""NullTokenizer vocabulary the shards are read with (its eod is VOCAB - 1)."""


def write_shard(prefix: str, documents: int, tokens_per_document: int = 40, seed: int = 0) -> str:
    """A Megatron .bin/.idx pair of random token ids in [3, VOCAB) (NullTokenizer's eod is VOCAB - 1)."""
    rng = numpy.random.default_rng(seed)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=numpy.uint16)
    for _ in range(documents):
        builder.add_document(torch.from_numpy(rng.integers(3, VOCAB - 1, size=tokens_per_document)), [tokens_per_document])
    builder.finalize(f"{prefix}.idx")
    return prefix
