"""Generation from a checkpoint: the KV cache changes nothing but the cost; TP=2 generates what TP=1 does;
a left-padded batch of prompts of different lengths generates what each prompt generates alone."""

from __future__ import annotations

import pytest
import torch

from megatron_sota.inference.sampling import SamplingSettings
from megatron_sota.runtime.local_ranks import run_distributed
from tests.inference.probes import LogitsRequest, Request, cached_logits_probe, generate_probe

GREEDY = SamplingSettings(temperature=0.0, repetition_penalty=1.0)


def _max_difference(a, b) -> float:
    """Largest elementwise difference of two tensors or of two lists of tensors."""
    pairs = zip(a, b) if isinstance(a, list) else [(a, b)]
    return max((x - y).abs().max().item() for x, y in pairs)


@pytest.mark.slow
def test_cached_logits_equal_recomputed_logits_at_every_step(checkpoint, prompts):
    sequence = torch.cat([prompts, torch.randint(0, 1900, (2, 20), generator=torch.Generator().manual_seed(0))], 1)
    out = run_distributed(cached_logits_probe, 1, checkpoint, sequence, prompts.shape[1])[0]
    assert out["cached"].shape == (2, 21, 1900)
    assert (out["cached"] - out["recomputed"]).abs().max().item() <= 1e-4


SAMPLED = SamplingSettings(temperature=1.0, top_k=50, top_p=0.9, repetition_penalty=1.1)


RAGGED_NEW = 16
RAGGED_BUDGETS = [16, 5, 16]
"""The unpadded row stops early (its own budget) while the padded rows run on."""


@pytest.fixture(scope="module")
def tp1(checkpoint, prompts, ragged_prompts) -> list:
    """One spawn serves every TP=1 request: [0-3] the equal-length prompts, [4-] the ragged batch."""
    requests = [Request(32, GREEDY), Request(32, GREEDY, use_cache=False), Request(16, SAMPLED, seed=7), Request(16, SAMPLED, seed=8)]
    requests += [Request(RAGGED_BUDGETS, GREEDY, prompts=ragged_prompts), Request(RAGGED_NEW, GREEDY, use_cache=False, prompts=ragged_prompts)]
    requests += [Request(RAGGED_NEW, GREEDY, prompts=[row]) for row in ragged_prompts]
    requests += [LogitsRequest(ragged_prompts, prefill=5)]
    return run_distributed(generate_probe, 1, checkpoint, prompts, requests)[0]


@pytest.mark.slow
def test_cached_greedy_equals_uncached_and_tp2_equals_tp1(checkpoint, prompts, ragged_prompts, tp1):
    cached, uncached = tp1[0], tp1[1]
    tp2_requests = [Request(32, GREEDY), Request(16, SAMPLED, seed=7), Request(RAGGED_BUDGETS, GREEDY, prompts=ragged_prompts)]
    tp2_requests += [LogitsRequest(ragged_prompts, prefill=5)]
    tp2 = run_distributed(generate_probe, 2, checkpoint, prompts, tp2_requests)
    assert [len(t) for t in cached["tokens"]] == [32, 32] and cached["stop_reasons"] == ["length", "length"]
    assert cached["tokens"] == uncached["tokens"] == tp2[0][0]["tokens"] == tp2[1][0]["tokens"]
    # Sampling: every TP rank draws the same tokens (same gathered logits, same seeded generator).
    assert tp2[0][1]["tokens"] == tp2[1][1]["tokens"]
    # Left padding under TP: each rank masks the pads of its own heads.
    assert tp2[0][2]["tokens"] == tp2[1][2]["tokens"] == tp1[4]["tokens"]
    for key in ("padded", "cached"):
        assert _max_difference(tp2[0][3][key], tp1[9][key]) <= 1e-4


@pytest.mark.slow
def test_left_padded_batch_generates_what_each_prompt_generates_alone(tp1):
    batch_cached, batch_uncached, alone = tp1[4], tp1[5], [tp1[6 + row]["tokens"][0] for row in range(3)]
    assert [len(t) for t in alone] == [RAGGED_NEW] * 3
    assert batch_uncached["tokens"] == alone
    # One budget per row: each row stops at its own, the batch runs on for the longest.
    assert batch_cached["tokens"] == [tokens[:n] for tokens, n in zip(alone, RAGGED_BUDGETS)]
    assert batch_cached["stop_reasons"] == batch_uncached["stop_reasons"] == ["length"] * 3
    # Logits (more sensitive than greedy tokens): padded = alone, cached = recomputed, at every real position.
    logits = tp1[9]
    assert [t.shape for t in logits["padded"]] == [(7, 1900), (15, 1900), (3, 1900)]
    assert _max_difference(logits["padded"], logits["alone"]) <= 1e-4
    assert logits["cached"].shape == (3, 11, 1900) and _max_difference(logits["cached"], logits["recomputed"]) <= 1e-4


@pytest.mark.slow
def test_seeds_change_samples_and_stop_ids_end_a_row(checkpoint, prompts, tp1):
    assert tp1[2]["tokens"] != tp1[3]["tokens"]
    greedy = tp1[0]["tokens"]
    stop = greedy[0][3]
    stopped = run_distributed(generate_probe, 1, checkpoint, prompts, [Request(16, GREEDY, stop_ids=(stop,))])[0][0]
    first = greedy[0].index(stop)
    assert stopped["tokens"][0] == greedy[0][: first + 1] and stopped["stop_reasons"][0] == "stop_id"


@pytest.mark.slow
def test_generation_beyond_the_context_is_refused(checkpoint, prompts):
    from megatron_sota.errors import MegatronSotaError

    with pytest.raises(MegatronSotaError, match=r"10 prompt tokens \+ max_new_tokens=5000 exceed the model's context \(max_position_embeddings=4096\)"):
        run_distributed(generate_probe, 1, checkpoint, prompts, [Request(5000, GREEDY)])


def test_left_pads_repeat_the_first_token_so_the_repetition_penalty_sees_only_prompt_tokens():
    from megatron_sota.inference.generation import left_pad
    from megatron_sota.inference.sampling import apply_repetition_penalty

    padded, pads = left_pad([[5, 6], [7, 8, 9, 4], [3]])
    assert padded.tolist() == [[5, 5, 5, 6], [7, 8, 9, 4], [3, 3, 3, 3]] and pads == [2, 0, 3]
    logits = torch.randn(3, 12, generator=torch.Generator().manual_seed(0))
    for row, ids in enumerate([[5, 6], [7, 8, 9, 4], [3]]):
        alone = apply_repetition_penalty(logits[row : row + 1], torch.tensor([ids]), 1.3)
        torch.testing.assert_close(apply_repetition_penalty(logits, padded, 1.3)[row : row + 1], alone)


def test_prompts_without_tokens_are_refused_by_row():
    from megatron_sota.errors import MegatronSotaError
    from megatron_sota.inference.generation import left_pad

    with pytest.raises(MegatronSotaError, match="prompt 1: expected at least one token id, found none"):
        left_pad([[5, 6], []])


class _Recorder(torch.nn.Module):
    """Stands in for the GPT model: records what InferenceModel.logits passes it."""

    def forward(self, tokens, positions, mask, inference_context=None, runtime_gather_output=True):
        self.positions, self.mask = positions, mask
        return torch.zeros(*tokens.shape, 5)


class _Cache:
    sequence_len_offset = 0

    def increment_sequence_len_offset(self, n):
        self.sequence_len_offset += n


def test_logits_give_the_model_positions_that_count_real_tokens_and_mask_only_when_padded():
    """Learned absolute position embeddings read these positions (RoPE models, as tiny, do not)."""
    from megatron_sota.inference.checkpoint_model import InferenceModel

    recorder = _Recorder()
    model = InferenceModel(job=None, model=recorder, vocab_size=5, device=torch.device("cpu"))
    cache = _Cache()
    model.logits(torch.zeros(2, 4, dtype=torch.long), cache, pad_lengths=[2, 0])
    assert recorder.positions.tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]] and recorder.mask.shape == (2, 1, 4, 4)
    model.logits(torch.zeros(2, 1, dtype=torch.long), cache, pad_lengths=[2, 0])
    assert recorder.positions.tolist() == [[2], [4]] and recorder.mask[:, 0, 0].tolist() == [[True, True, False, False, False], [False] * 5]
    model.logits(torch.zeros(2, 3, dtype=torch.long), None, pad_lengths=[0, 0])
    assert recorder.positions.tolist() == [[0, 1, 2], [0, 1, 2]] and recorder.mask is None


class _Scripted:
    """Stands in for an InferenceModel: the logits of step k are a fixed random table, whatever the tokens."""

    def __init__(self, batch: int, vocab: int, steps: int):
        from types import SimpleNamespace

        self.job = SimpleNamespace(model=SimpleNamespace(max_position_embeddings=64))
        self.table = torch.randn(steps, batch, vocab, generator=torch.Generator().manual_seed(3)) * 3
        self.step = 0

    def logits(self, tokens, cache=None, pad_lengths=None):
        if cache is not None:
            cache.increment_sequence_len_offset(tokens.shape[1])
        out = self.table[self.step][:, None, :].expand(-1, tokens.shape[1], -1)
        self.step += 1
        return out


def test_returned_logprobs_are_the_raw_distributions_at_the_drawn_tokens():
    """PPO compares them with the training pass's log-probs: temperature, top-k and the repetition penalty shape
    the draw, not the log-prob of the drawn token under the model."""
    from megatron_sota.inference.generation import generate

    model = _Scripted(batch=2, vocab=11, steps=6)
    settings = SamplingSettings(temperature=0.5, top_k=4, top_p=0.9, repetition_penalty=1.3)
    out = generate(model, [[1, 2, 3], [4]], 6, settings, stop_ids=(), seed=5, return_logprobs=True)
    raw = torch.log_softmax(model.table, dim=-1)
    for row in range(2):
        expected = [raw[step, row, token].item() for step, token in enumerate(out.tokens[row])]
        assert out.logprobs[row] == pytest.approx(expected, abs=1e-6)
    assert generate(_Scripted(2, 11, 6), [[1, 2, 3], [4]], 6, settings, seed=5).logprobs is None


def test_row_seeds_make_a_rows_samples_independent_of_its_batch():
    from megatron_sota.inference.generation import generate

    settings = SamplingSettings(temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
    together = generate(_Scripted(2, 11, 6), [[1, 2, 3], [4]], 6, settings, row_seeds=[11, 12])
    alone_model = _Scripted(2, 11, 6)
    alone_model.table = alone_model.table[:, 1:]  # the second row's logits, as if it were alone
    alone = generate(alone_model, [[4]], 6, settings, row_seeds=[12])
    assert together.tokens[1] == alone.tokens[0]
    shared = generate(_Scripted(2, 11, 6), [[1, 2, 3], [4]], 6, settings, seed=12)
    assert shared.tokens != together.tokens  # one generator for the batch draws otherwise
