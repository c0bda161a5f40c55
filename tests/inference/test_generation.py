"""Generation from a checkpoint: the KV cache changes nothing but the cost; TP=2 generates what TP=1 does."""

from __future__ import annotations

import pytest
import torch

from megatron_sota.inference.sampling import SamplingSettings
from megatron_sota.runtime.local_ranks import run_distributed
from tests.inference.probes import Request, cached_logits_probe, generate_probe

GREEDY = SamplingSettings(temperature=0.0, repetition_penalty=1.0)


def test_cached_logits_equal_recomputed_logits_at_every_step(checkpoint, prompts):
    sequence = torch.cat([prompts, torch.randint(0, 1900, (2, 20), generator=torch.Generator().manual_seed(0))], 1)
    out = run_distributed(cached_logits_probe, 1, checkpoint, sequence, prompts.shape[1])[0]
    assert out["cached"].shape == (2, 21, 1900)
    assert (out["cached"] - out["recomputed"]).abs().max().item() <= 1e-4


SAMPLED = SamplingSettings(temperature=1.0, top_k=50, top_p=0.9, repetition_penalty=1.1)


@pytest.fixture(scope="module")
def tp1(checkpoint, prompts) -> list:
    requests = [Request(32, GREEDY), Request(32, GREEDY, use_cache=False), Request(16, SAMPLED, seed=7), Request(16, SAMPLED, seed=8)]
    return run_distributed(generate_probe, 1, checkpoint, prompts, requests)[0]


def test_cached_greedy_equals_uncached_and_tp2_equals_tp1(checkpoint, prompts, tp1):
    cached, uncached = tp1[0], tp1[1]
    tp2 = run_distributed(generate_probe, 2, checkpoint, prompts, [Request(32, GREEDY), Request(16, SAMPLED, seed=7)])
    assert [len(t) for t in cached["tokens"]] == [32, 32] and cached["stop_reasons"] == ["length", "length"]
    assert cached["tokens"] == uncached["tokens"] == tp2[0][0]["tokens"] == tp2[1][0]["tokens"]
    # Sampling: every TP rank draws the same tokens (same gathered logits, same seeded generator).
    assert tp2[0][1]["tokens"] == tp2[1][1]["tokens"]


def test_seeds_change_samples_and_stop_ids_end_a_row(checkpoint, prompts, tp1):
    assert tp1[2]["tokens"] != tp1[3]["tokens"]
    greedy = tp1[0]["tokens"]
    stop = greedy[0][3]
    stopped = run_distributed(generate_probe, 1, checkpoint, prompts, [Request(16, GREEDY, stop_ids=(stop,))])[0][0]
    first = greedy[0].index(stop)
    assert stopped["tokens"][0] == greedy[0][: first + 1] and stopped["stop_reasons"][0] == "stop_id"


def test_generation_beyond_the_context_is_refused(checkpoint, prompts):
    from megatron_sota.errors import MegatronSotaError

    with pytest.raises(MegatronSotaError, match=r"10 prompt tokens \+ max_new_tokens=5000 exceed the model's context \(max_position_embeddings=4096\)"):
        run_distributed(generate_probe, 1, checkpoint, prompts, [Request(5000, GREEDY)])
