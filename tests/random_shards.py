"""Megatron .bin/.idx shards of random token ids, read with NullTokenizer, for the blend tests.

Writes data only; it must not build datasets or configs.
"""

from __future__ import annotations

import numpy
import torch
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

VOCAB = 1000
"""NullTokenizer vocabulary the shards are read with (its eod is VOCAB - 1)."""


def write_shard(prefix: str, documents: int, tokens_per_document: int = 40, seed: int = 0, eod: bool = False) -> str:
    """A Megatron .bin/.idx pair of random token ids in [3, VOCAB - 1); `eod`: each document's last token is
    NullTokenizer's eod (VOCAB - 1), as tools/preprocess_data.py writes them."""
    rng = numpy.random.default_rng(seed)
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=numpy.uint16)
    for _ in range(documents):
        ids = rng.integers(3, VOCAB - 1, size=tokens_per_document)
        if eod:
            ids[-1] = VOCAB - 1
        builder.add_document(torch.from_numpy(ids), [tokens_per_document])
    builder.finalize(f"{prefix}.idx")
    return prefix
