"""Choosing the next token from logits: repetition penalty, temperature, top-k, top-p, then a seeded draw.

Pure functions on [batch, vocab] fp32 logits, applied in the order Hugging Face's `generate`
applies them, so a setting means the same here as in an exported model's generation_config.json.
Filtered-out tokens get -inf and can never be drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Union

import torch

from megatron_sota.config.generation import GenerationConfig


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.7
    """0 picks the most likely token (greedy)."""
    top_k: int = 40
    """0 disables."""
    top_p: float = 0.95
    """1.0 disables."""
    repetition_penalty: float = 1.1
    """1.0 disables."""

    @classmethod
    def from_config(cls, g: GenerationConfig) -> "SamplingSettings":
        return cls(temperature=g.temperature, top_k=g.top_k, top_p=g.top_p, repetition_penalty=g.repetition_penalty)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def apply_repetition_penalty(logits: torch.Tensor, previous: torch.Tensor, penalty: float) -> torch.Tensor:
    """Makes every token already in `previous` [batch, len] less likely (CTRL's rule, as transformers'):
    a positive logit is divided by the penalty, a negative one multiplied, so both move down."""
    if penalty == 1.0 or previous.numel() == 0:
        return logits
    seen = torch.gather(logits, 1, previous)
    penalised = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, previous, penalised)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keeps the k largest logits per row (ties at the k-th value included); k=0 keeps all."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth_largest = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keeps the smallest set of most likely tokens whose probabilities sum to at least p (never empty)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    # A token stays if the tokens ranked above it hold less than p in total.
    mass_before = torch.cumsum(probs, dim=-1) - probs
    drop_sorted = mass_before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def next_tokens(
    logits: torch.Tensor, previous: torch.Tensor, settings: SamplingSettings,
    generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
) -> torch.Tensor:
    """One token id per row of `logits` [batch, vocab], given the ids so far `previous` [batch, len].

    `generator`: one for the whole batch, or one per row (a row's draws then do not depend on its batch)."""
    logits = apply_repetition_penalty(logits.float(), previous, settings.repetition_penalty)
    if settings.greedy:
        return logits.argmax(dim=-1)
    logits = filter_top_p(filter_top_k(logits / settings.temperature, settings.top_k), settings.top_p)
    probs = torch.softmax(logits, dim=-1)
    if generator is None or isinstance(generator, torch.Generator):
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return torch.cat([torch.multinomial(row, 1, generator=g) for row, g in zip(probs, generator)])
