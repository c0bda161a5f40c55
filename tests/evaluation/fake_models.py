"""EvalModels without a network, whose answers the tests choose: the runner's metrics can then be checked against
numbers computed by hand (a character tokenizer, a scorer that prefers chosen continuations, scripted generators)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable, List, Optional

import torch

from megatron_sota.evaluation.runner import ChatFormat, EvalModel
from megatron_sota.evaluation.scoring import ScoredSequence, score_in_batches


class CharTokenizer:
    """One token per character (ids are code points); 0 ends a document."""

    eod = 0
    vocab_size = 0x110000

    def tokenize(self, text: str) -> List[int]:
        return [ord(c) for c in text]

    def detokenize(self, ids: List[int]) -> str:
        return "".join(chr(i) for i in ids if i)


class PreferenceScorer:
    """Every token costs -1 nat, except that `bonus(text before the continuation's last token, that token)` is added
    to the last one: so a test decides which continuation of a context wins."""

    def __init__(self, bonus: Callable[[str, str], float], max_length: int = 8192):
        self.bonus = bonus
        self.max_length = max_length
        self.device = torch.device("cpu")
        self.split_over_data_parallel = True

    def score(self, sequences, progress=None) -> List[ScoredSequence]:
        return score_in_batches(sequences, self.max_length, 4, self._score, progress)

    def _score(self, sequences) -> List[ScoredSequence]:
        out = []
        for seq in sequences:
            logprobs = torch.full((len(seq) - 1,), -1.0, dtype=torch.float64)
            text = "".join(chr(i) for i in seq)
            logprobs[-1] += self.bonus(text[:-1], text[-1])
            out.append(ScoredSequence(logprobs, torch.zeros(len(seq) - 1, dtype=torch.long)))
        return out


def scripted_model(
    answer: Callable[[str, Optional[int]], str], bonus: Callable[[str, str], float] = lambda context, last: 0.0,
    chat: Optional[ChatFormat] = None,
) -> EvalModel:
    """Generation writes `answer(prompt text, seed)` (seed None when greedy) then end-of-document."""
    tokenizer = CharTokenizer()

    def reply(prompt: List[int], seed: Optional[int], max_new_tokens: int) -> List[int]:
        return tokenizer.tokenize(answer(tokenizer.detokenize(prompt), seed))[:max_new_tokens] + [tokenizer.eod]

    def generate_greedy(prompts, max_new_tokens, finished):
        return [reply(p, None, max_new_tokens) for p in prompts]

    def generate_sampled(prompts, max_new_tokens, temperature, top_p, seeds):
        return [reply(p, seed, max_new_tokens) for p, seed in zip(prompts, seeds)]

    return EvalModel(PreferenceScorer(bonus), generate_greedy, tokenizer, chat, generate_sampled)


def single_replica(monkeypatch) -> None:
    """The runner splits work over data-parallel replicas; without a distributed session there is one."""
    from megatron.core import parallel_state

    monkeypatch.setattr(parallel_state, "get_data_parallel_world_size", lambda: 1)
    monkeypatch.setattr(parallel_state, "get_data_parallel_rank", lambda: 0)
