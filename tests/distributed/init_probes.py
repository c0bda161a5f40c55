"""Body of the initial-weights layout test: build tiny's model chunks at a layout, return each rank's shards.

The shards come from the model's sharded state dict (the checkpoint's own description of where each local tensor
sits in its global tensor), so the test can assemble every global tensor without knowing megatron's layouts.
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

from megatron_sota.checkpointing.contents import model_sharded_state_dict
from megatron_sota.config.job import JobConfig
from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config, padded_vocab_size
from megatron_sota.runtime.session import distributed_session

Shard = Tuple[str, Tuple[int, ...], Tuple[int, ...], int, torch.Tensor]
"""(checkpoint key, global shape, global offset, number of prepended axes, local data)."""


def _sharded_tensors(node) -> List[ShardedTensor]:
    if isinstance(node, ShardedTensorFactory):
        return _sharded_tensors(node.build())
    if isinstance(node, ShardedTensor):
        return [node]
    if isinstance(node, dict):
        return [t for value in node.values() for t in _sharded_tensors(value)]
    if isinstance(node, (list, tuple)):
        return [t for value in node for t in _sharded_tensors(value)]
    return []


def initial_shards_probe(rank: int, job: JobConfig) -> List[Shard]:
    """This rank's freshly initialised weights, as checkpoint shards."""
    with distributed_session(job.parallel, "cpu", seed=job.train.seed):
        config = build_transformer_config(job.model, job.parallel, job.precision, "none", "cpu", use_te=False)
        vocab = padded_vocab_size(job.model.vocab_size, job.model.make_vocab_size_divisible_by, job.parallel.tp)
        chunks = build_model_chunks(job.model, config, vocab, job.train.seq_length, job.train.seed, use_te=False)
        return [
            (t.key, tuple(t.global_shape), tuple(t.global_offset), t.prepend_axis_num, t.data.detach().clone())
            for t in _sharded_tensors(model_sharded_state_dict(chunks))
        ]
