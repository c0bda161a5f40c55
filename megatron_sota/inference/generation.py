"""Autoregressive generation from an InferenceModel, with or without megatron-core's static KV cache.

With the cache the prompt is encoded once and each new token costs one position's compute;
without it the whole sequence is recomputed every step (the reference the cache is tested
against). Every tensor-parallel rank draws the same token: logits are gathered over TP and the
draw uses a generator seeded identically on every rank.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.inference.checkpoint_model import InferenceModel
from megatron_sota.inference.sampling import SamplingSettings, next_tokens


@dataclass
class Generated:
    tokens: List[List[int]]
    """New token ids per prompt, the stop token included when one ended the row."""
    stop_reasons: List[str] = field(default_factory=list)
    """'stop_id' or 'length' per prompt."""
    seconds: float = 0.0


def generate(
    model: InferenceModel,
    prompts: torch.Tensor,
    max_new_tokens: int,
    settings: SamplingSettings,
    stop_ids: Sequence[int] = (),
    seed: int = 0,
    use_cache: bool = True,
) -> Generated:
    """Continues each row of `prompts` [batch, len] (rows of equal length) by up to max_new_tokens."""
    from megatron.core.inference.contexts import StaticInferenceContext

    start = time.perf_counter()
    batch, prompt_len = prompts.shape
    context = model.job.model.max_position_embeddings
    if prompt_len + max_new_tokens > context:
        raise MegatronSotaError(
            f"{prompt_len} prompt tokens + max_new_tokens={max_new_tokens} exceed the model's context "
            f"(max_position_embeddings={context})"
        )
    generator = torch.Generator().manual_seed(seed)
    sequence = prompts.clone()
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long)
    finished = torch.zeros(batch, dtype=torch.bool)
    reasons: List[Optional[str]] = [None] * batch
    cache = StaticInferenceContext(batch, prompt_len + max_new_tokens) if use_cache else None
    step_input = prompts
    for _ in range(max_new_tokens):
        logits = model.logits(step_input if use_cache else sequence, cache)[:, -1].cpu()
        chosen = next_tokens(logits, sequence, settings, generator)
        if cache is not None and cache.sequence_len_offset == prompt_len:
            cache.enable_decode_mode()
        sequence = torch.cat([sequence, chosen[:, None]], dim=1)
        for row in torch.nonzero(~finished & torch.isin(chosen, stops)).flatten().tolist():
            finished[row], reasons[row] = True, "stop_id"
        if bool(finished.all()):
            break
        step_input = chosen[:, None]
    new = sequence[:, prompt_len:]
    tokens = []
    for row in range(batch):
        ids = new[row].tolist()
        if reasons[row] == "stop_id":
            ids = ids[: next(i for i, t in enumerate(ids) if t in set(stop_ids)) + 1]
        tokens.append(ids)
    return Generated(tokens, [r or "length" for r in reasons], time.perf_counter() - start)
