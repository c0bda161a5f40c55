"""Rank bodies of the generation tests: one process serves several requests (spawning costs seconds)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Sequence

import torch

from megatron_sota.inference.checkpoint_model import inference_parallel, load_inference_model
from megatron_sota.inference.generation import generate
from megatron_sota.inference.sampling import SamplingSettings
from megatron_sota.runtime.session import distributed_session


@dataclass(frozen=True)
class Request:
    new_tokens: int
    settings: SamplingSettings
    use_cache: bool = True
    stop_ids: Sequence[int] = ()
    seed: int = 0


def generate_probe(rank: int, checkpoint: str, prompts: torch.Tensor, requests: List[Request]) -> List[dict]:
    with distributed_session(inference_parallel(int(os.environ["WORLD_SIZE"])), "cpu") as session:
        model = load_inference_model(checkpoint, session.device, "fp32")
        results = []
        for r in requests:
            out = generate(model, prompts, r.new_tokens, r.settings, stop_ids=r.stop_ids, seed=r.seed, use_cache=r.use_cache)
            results.append({"tokens": out.tokens, "stop_reasons": out.stop_reasons})
        return results


def cached_logits_probe(rank: int, checkpoint: str, sequence: torch.Tensor, prompt_len: int) -> dict:
    """Last-position logits at every step: cached (prompt once, then one token per step) and recomputed."""
    from megatron.core.inference.contexts import StaticInferenceContext

    with distributed_session(inference_parallel(1), "cpu") as session:
        model = load_inference_model(checkpoint, session.device, "fp32")
        cache = StaticInferenceContext(sequence.shape[0], sequence.shape[1])
        cached = [model.logits(sequence[:, :prompt_len], cache)[:, -1]]
        cache.enable_decode_mode()
        for end in range(prompt_len + 1, sequence.shape[1] + 1):
            cached.append(model.logits(sequence[:, end - 1 : end], cache)[:, -1])
        full = model.logits(sequence)
        recomputed = [full[:, end - 1] for end in range(prompt_len, sequence.shape[1] + 1)]
        return {"cached": torch.stack(cached, 1), "recomputed": torch.stack(recomputed, 1)}
