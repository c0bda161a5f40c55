"""The initial model is the same at every layout: tiny built at TP=2 and at PP=2 with VPP=2 has, bit for bit, the
global weights of the one-process build (each global tensor assembled from the checkpoint's shard offsets): what
megatron-core's CPU initialisation and the per-layer reseeding of model/layer_spec.py promise."""

from __future__ import annotations

from typing import Dict, List

import pytest
import torch

from megatron_sota.config.job import JobConfig
from megatron_sota.config.presets import load_model_preset
from megatron_sota.runtime.local_ranks import run_distributed
from tests.distributed.init_probes import Shard, initial_shards_probe


def _job(**parallel) -> JobConfig:
    job = JobConfig()
    job.model = load_model_preset("tiny")
    job.train.seq_length = 64
    job.train.seed = 5
    job.runtime.device = "cpu"
    for key, value in parallel.items():
        setattr(job.parallel, key, value)
    return job


def _global_weights(ranks: List[List[Shard]]) -> Dict[str, torch.Tensor]:
    """Every checkpoint key's global tensor; replicas must agree and every element must be covered."""
    tensors: Dict[str, torch.Tensor] = {}
    for shards in ranks:
        for key, shape, offset, prepended, data in shards:
            full = tensors.setdefault(key, torch.full(shape, float("nan"), dtype=data.dtype))
            index = tuple(offset[:prepended]) + tuple(
                slice(o, o + n) for o, n in zip(offset[prepended:], data.shape)
            )
            seen = full[index]
            assert torch.isnan(seen).all() or torch.equal(seen, data), f"replicas of {key} at {offset} differ"
            full[index] = data
    for key, full in tensors.items():
        assert not torch.isnan(full).any(), f"{key}: some elements are held by no rank"
    return tensors


@pytest.fixture(scope="module")
def one_process() -> Dict[str, torch.Tensor]:
    return _global_weights(run_distributed(initial_shards_probe, 1, _job()))


@pytest.mark.parametrize("parallel", [dict(tp=2), dict(pp=2, vpp=2)], ids=["tp2", "pp2-vpp2"])
def test_initial_weights_do_not_depend_on_layout(one_process, parallel):
    run = _global_weights(run_distributed(initial_shards_probe, 2, _job(**parallel)))
    assert set(run) == set(one_process)
    for key, expected in one_process.items():
        assert torch.equal(run[key], expected), key


def test_one_process_weights_are_random(one_process):
    # Guards the comparison above against a degenerate build (all zeros, or one value everywhere).
    qkv = one_process["decoder.layers.self_attention.linear_qkv.weight"]
    assert qkv.shape[0] == 4 and qkv[0].std() > 0.01 and not torch.equal(qkv[0], qkv[1])
