"""Rank bodies of the generation tests: one process serves several requests (spawning costs seconds)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch

from megatron_sota.inference.checkpoint_model import inference_parallel, load_inference_model
from megatron_sota.inference.generation import generate
from megatron_sota.inference.sampling import SamplingSettings
from megatron_sota.runtime.session import distributed_session


@dataclass(frozen=True)
class Request:
    new_tokens: Union[int, Sequence[int]]
    settings: SamplingSettings
    use_cache: bool = True
    stop_ids: Sequence[int] = ()
    seed: int = 0
    prompts: Optional[Sequence[Sequence[int]]] = None
    """Token-id lists of any lengths (left padded by generate) instead of the probe's prompts."""


@dataclass(frozen=True)
class LogitsRequest:
    """Logits of a left-padded batch at every real position, three ways (see `padded_logits`)."""

    prompts: Sequence[Sequence[int]]
    prefill: int
    """Columns the cached pass encodes at once; the rest go one per step (some rows start inside them)."""


def padded_logits(model, prompts: Sequence[Sequence[int]], prefill: int) -> dict:
    """'padded': the padded batch recomputed under its mask, 'cached': the same batch through the KV
    cache (prefill, then one column per step), 'alone': each prompt by itself; real positions only."""
    from megatron.core.inference.contexts import StaticInferenceContext

    from megatron_sota.inference.generation import left_pad

    padded, pads = left_pad(prompts)
    full = model.logits(padded, None, pads)
    cache = StaticInferenceContext(padded.shape[0], padded.shape[1])
    cached = [model.logits(padded[:, :prefill], cache, pads)[:, -1]]
    cache.enable_decode_mode()
    cached += [model.logits(padded[:, end - 1 : end], cache, pads)[:, -1] for end in range(prefill + 1, padded.shape[1] + 1)]
    return {
        "padded": [full[row, pad:] for row, pad in enumerate(pads)],
        "cached": torch.stack(cached, 1),
        "recomputed": full[:, prefill - 1 :],
        "alone": [model.logits(torch.tensor([list(p)]))[0] for p in prompts],
    }


def generate_probe(rank: int, checkpoint: str, prompts: Optional[torch.Tensor], requests: List[Union[Request, LogitsRequest]]) -> List[dict]:
    with distributed_session(inference_parallel(int(os.environ["WORLD_SIZE"])), "cpu") as session:
        model = load_inference_model(checkpoint, session.device, "fp32")
        results = []
        for r in requests:
            if isinstance(r, LogitsRequest):
                results.append(padded_logits(model, r.prompts, r.prefill))
                continue
            batch = prompts if r.prompts is None else r.prompts
            out = generate(model, batch, r.new_tokens, r.settings, stop_ids=r.stop_ids, seed=r.seed, use_cache=r.use_cache)
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
