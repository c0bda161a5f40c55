"""Rank body of the beam-search tests: one process loads the checkpoint and serves every request (spawning costs seconds)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import List, Sequence, Union

from megatron_sota.inference.beam_search import GREEDY, beam_search
from megatron_sota.inference.checkpoint_model import inference_parallel, load_inference_model
from megatron_sota.inference.generation import generate
from megatron_sota.runtime.session import distributed_session


@dataclass(frozen=True)
class BeamRequest:
    prompt: Sequence[int]
    num_beams: int
    max_new_tokens: int
    stop_ids: Sequence[int] = ()
    length_penalty: float = 1.0
    early_stopping: Union[bool, str] = False
    num_return_sequences: int = 1
    use_cache: bool = True


@dataclass(frozen=True)
class GreedyRequest:
    prompt: Sequence[int]
    max_new_tokens: int
    stop_ids: Sequence[int] = ()


def beam_probe(rank: int, checkpoint: str, requests: List[Union[BeamRequest, GreedyRequest]]) -> List[dict]:
    with distributed_session(inference_parallel(1), "cpu") as session:
        model = load_inference_model(checkpoint, session.device, "fp32")
        results = []
        for r in requests:
            if isinstance(r, GreedyRequest):
                out = generate(model, [r.prompt], r.max_new_tokens, GREEDY, stop_ids=r.stop_ids)
                results.append({"sequences": out.tokens, "stop_reasons": out.stop_reasons, "seconds": out.seconds})
            else:
                out = beam_search(model, **dataclasses.asdict(r))
                results.append(dataclasses.asdict(out))
        return results
