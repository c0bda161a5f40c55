"""Next-token selection: each filter against transformers' logits processors, and draws that never leave the nucleus."""

from __future__ import annotations

import pytest
import torch

from megatron_sota.config.generation import GenerationConfig
from megatron_sota.inference.sampling import (
    SamplingSettings,
    apply_repetition_penalty,
    filter_top_k,
    filter_top_p,
    next_tokens,
)

transformers = pytest.importorskip("transformers")


def _logits(rows=4, vocab=50, seed=0) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("k", [1, 5, 20])
def test_top_k_equals_transformers(k):
    logits = _logits()
    expected = transformers.TopKLogitsWarper(top_k=k)(None, logits.clone())
    assert torch.equal(filter_top_k(logits, k), expected)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.99])
def test_top_p_equals_transformers(p):
    logits = _logits()
    expected = transformers.TopPLogitsWarper(top_p=p)(None, logits.clone())
    assert torch.equal(torch.isinf(filter_top_p(logits, p)), torch.isinf(expected))


@pytest.mark.parametrize("penalty", [1.3, 0.8])
def test_repetition_penalty_equals_transformers_and_lowers_repeated_tokens(penalty):
    logits = _logits()
    previous = torch.tensor([[1, 2, 2, 7]] * 4)
    expected = transformers.RepetitionPenaltyLogitsProcessor(penalty=penalty)(previous, logits.clone())
    ours = apply_repetition_penalty(logits, previous, penalty)
    assert torch.allclose(ours, expected)
    seen = torch.softmax(ours, -1)[:, [1, 2, 7]] / torch.softmax(logits, -1)[:, [1, 2, 7]]
    assert bool((seen < 1).all()) if penalty > 1 else bool((seen > 1).all())
    untouched = [i for i in range(50) if i not in (1, 2, 7)]
    assert torch.equal(ours[:, untouched], logits[:, untouched])


def test_draws_never_leave_the_nucleus_and_follow_its_renormalised_distribution():
    # A fixed distribution over 6 tokens: p = 0.45, 0.25, 0.15, 0.08, 0.05, 0.02.
    probs = torch.tensor([0.45, 0.25, 0.15, 0.08, 0.05, 0.02])
    logits = probs.log().expand(20000, -1).clone()
    settings = SamplingSettings(temperature=1.0, top_k=4, top_p=0.8, repetition_penalty=1.0)
    draws = next_tokens(logits, torch.empty(20000, 0, dtype=torch.long), settings, torch.Generator().manual_seed(0))
    # top-k keeps tokens 0-3; top-p 0.8 keeps 0, 1, 2 (0.45 + 0.25 < 0.8 before token 2, 0.85 after it).
    assert set(draws.tolist()) == {0, 1, 2}
    frequency = torch.bincount(draws, minlength=6).float() / draws.numel()
    assert torch.allclose(frequency[:3], probs[:3] / probs[:3].sum(), atol=0.015)


def test_greedy_picks_the_best_token_after_the_penalty_and_seeds_repeat():
    logits = torch.tensor([[2.0, 1.9, -1.0]])
    greedy = SamplingSettings(temperature=0.0, repetition_penalty=1.0)
    assert next_tokens(logits, torch.tensor([[0]]), greedy).tolist() == [0]
    penalised = SamplingSettings(temperature=0.0, repetition_penalty=1.1)
    assert next_tokens(logits, torch.tensor([[0]]), penalised).tolist() == [1]  # 2.0 / 1.1 < 1.9
    sampled = SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
    wide = _logits(rows=64)
    none = torch.empty(64, 0, dtype=torch.long)
    first = next_tokens(wide, none, sampled, torch.Generator().manual_seed(5))
    assert torch.equal(first, next_tokens(wide, none, sampled, torch.Generator().manual_seed(5)))


def test_settings_default_to_the_generation_config():
    assert SamplingSettings.from_config(GenerationConfig()) == SamplingSettings(0.7, 40, 0.95, 1.1)
