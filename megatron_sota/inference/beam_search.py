"""Beam search from an InferenceModel: one prompt, its beams as the rows of megatron-core's static KV cache.

Decodes what transformers' `generate(num_beams=N, do_sample=False, ...)` decodes on the Hugging Face
export: beams scored by summed log-softmax, 2N (more with several stop ids) candidates a step, finished
hypotheses kept by length-normalised score, the same early-stopping rules. No logits processor is
applied (repetition penalty, temperature, top-k/p are sampling settings); it must not sample.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Sequence, Union

import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.inference.checkpoint_model import InferenceModel
from megatron_sota.inference.generation import generate
from megatron_sota.inference.sampling import SamplingSettings

EARLY_STOPPING = (False, True, "never")

GREEDY = SamplingSettings(temperature=0.0, repetition_penalty=1.0)


@dataclass
class BeamSearchResult:
    sequences: List[List[int]]
    """New token ids of the best hypotheses, best first (a stop token that ended one included)."""
    scores: List[float]
    """Each hypothesis' summed log-probability over its length ** length_penalty (transformers' sequences_scores)."""
    stop_reasons: List[str] = field(default_factory=list)
    """'stop_id' or 'length' per hypothesis."""
    seconds: float = 0.0


@dataclass
class _Finished:
    """The best num_beams ended hypotheses so far, best first."""

    capacity: int
    scores: List[float] = field(default_factory=list)
    sequences: List[List[int]] = field(default_factory=list)

    def offer(self, score: float, tokens: List[int]) -> None:
        # Insert after equal scores: an earlier hypothesis wins a tie, as a stable top-k over (kept, new) does.
        at = next((i for i, kept in enumerate(self.scores) if score > kept), len(self.scores))
        self.scores.insert(at, score)
        self.sequences.insert(at, tokens)
        del self.scores[self.capacity :], self.sequences[self.capacity :]

    @property
    def full(self) -> bool:
        return len(self.scores) == self.capacity


def beam_search(
    model: InferenceModel,
    prompt: Sequence[int],
    num_beams: int,
    max_new_tokens: int,
    stop_ids: Sequence[int] = (),
    length_penalty: float = 1.0,
    early_stopping: Union[bool, str] = False,
    num_return_sequences: int = 1,
    use_cache: bool = True,
) -> BeamSearchResult:
    """The num_return_sequences best continuations of `prompt` (token ids) found with num_beams beams.

    A hypothesis ends at a stop id or after max_new_tokens. `early_stopping`: False stops when no running
    beam can still beat the worst kept hypothesis at its current length, True as soon as num_beams
    hypotheses have ended, "never" when none can beat it at any length up to max_new_tokens (with a
    positive length_penalty). num_beams=1 is greedy decoding (as in transformers), scored the same way.
    Without `use_cache` every step recomputes all beams (the reference the cache reorder is tested against).
    """
    start = time.perf_counter()
    prompt = [int(t) for t in prompt]
    _check(model, prompt, num_beams, max_new_tokens, early_stopping, num_return_sequences)
    if num_beams == 1:
        return _greedy(model, prompt, max_new_tokens, stop_ids, length_penalty, use_cache, start)
    stops = torch.tensor(sorted(set(int(s) for s in stop_ids)), dtype=torch.long)
    # Enough candidates that num_beams of them are still running when each beam's best are stop ids.
    candidates = max(2, 1 + len(stops)) * num_beams
    decoder = _BeamDecoder(model, prompt, num_beams, max_new_tokens, use_cache)
    finished = _Finished(num_beams)
    running = torch.zeros(1)  # summed log-probabilities of the running beams, best first
    generated = torch.zeros(1, 0, dtype=torch.long)
    for step in range(max_new_tokens):
        length = step + 1
        totals = (torch.log_softmax(decoder.next_logits(generated), dim=-1) + running[:, None]).flatten()
        top, index = torch.topk(totals, candidates)
        vocab = totals.numel() // running.numel()
        parents, tokens = index // vocab, index % vocab
        ends = torch.isin(tokens, stops) | (length == max_new_tokens)
        # Only the num_beams best candidates may become hypotheses; the rest are spares that keep num_beams running.
        normalised = top / (length**length_penalty)
        for rank in torch.nonzero(ends[:num_beams]).flatten().tolist():
            finished.offer(normalised[rank].item(), generated[parents[rank]].tolist() + [tokens[rank].item()])
        if bool(ends.all()):
            break
        keep = torch.nonzero(~ends).flatten()[:num_beams]
        running = top[keep]
        generated = torch.cat([generated[parents[keep]], tokens[keep, None]], dim=1)
        decoder.select(parents[keep])
        if _done(finished, running[0], length, max_new_tokens, length_penalty, early_stopping):
            break
    sequences = finished.sequences[:num_return_sequences]
    reasons = ["stop_id" if s[-1] in set(stops.tolist()) else "length" for s in sequences]
    return BeamSearchResult(sequences, finished.scores[:num_return_sequences], reasons, time.perf_counter() - start)


def _done(finished: _Finished, best_running: torch.Tensor, length: int, max_new_tokens: int, length_penalty: float,
          early_stopping: Union[bool, str]) -> bool:
    """Whether no running beam can still enter the kept hypotheses (transformers' stopping rules)."""
    if not finished.full:
        return False
    if early_stopping is True:
        return True
    # The best a running beam could score: its summed log-probability now (it only falls) over the length
    # that favours it most; transformers' default (False) takes the current length, a heuristic.
    hypothetical = max_new_tokens if early_stopping == "never" and length_penalty > 0 else length
    return not bool(best_running / (hypothetical**length_penalty) > finished.scores[-1])


class _BeamDecoder:
    """Next-token logits of every running beam; the cached path reorders the cache rows with megatron-core's
    StaticInferenceContext.swap_key_value_dict when beams are reselected."""

    def __init__(self, model: InferenceModel, prompt: List[int], num_beams: int, max_new_tokens: int, use_cache: bool):
        from megatron.core.inference.contexts import StaticInferenceContext

        self.model = model
        self.prompt = torch.tensor([prompt])
        self.cache = StaticInferenceContext(num_beams, len(prompt) + max_new_tokens) if use_cache else None
        self.num_beams = num_beams

    def next_logits(self, generated: torch.Tensor) -> torch.Tensor:
        """[beams, vocab] for the beams' new tokens so far [beams, steps] (the prompt alone at step 0: one row)."""
        if self.cache is None:
            rows = torch.cat([self.prompt.expand(generated.shape[0], -1), generated], dim=1)
            return self.model.logits(rows)[:, -1].cpu()
        step_input = self.prompt if generated.shape[1] == 0 else generated[:, -1:]
        logits = self.model.logits(step_input, self.cache)[:, -1].cpu()
        self.cache.enable_decode_mode()
        return logits

    def select(self, parents: torch.Tensor) -> None:
        """Row i of the cache becomes the cache of beam parents[i] (after step 0: of the prompt, for every row)."""
        if self.cache is None:
            return
        if parents.tolist() != list(range(self.num_beams)):
            self.cache.swap_key_value_dict(parents.to(self.model.device))


def _greedy(model: InferenceModel, prompt: List[int], max_new_tokens: int, stop_ids: Sequence[int], length_penalty: float,
            use_cache: bool, start: float) -> BeamSearchResult:
    """One beam: transformers decodes greedily; so does this, with the hypothesis scored as beams are."""
    out = generate(model, [prompt], max_new_tokens, GREEDY, stop_ids=stop_ids, use_cache=use_cache, return_logprobs=True)
    tokens, logprobs = out.tokens[0], out.logprobs[0]
    score = float(torch.tensor(logprobs).sum()) / (len(tokens) ** length_penalty)
    return BeamSearchResult([tokens], [score], out.stop_reasons, time.perf_counter() - start)


def _check(model: InferenceModel, prompt: List[int], num_beams: int, max_new_tokens: int,
           early_stopping: Union[bool, str], num_return_sequences: int) -> None:
    """Every bad argument named at once."""
    problems: List[str] = []
    context = model.job.model.max_position_embeddings
    if not prompt:
        problems.append("prompt: expected at least one token id, found none")
    if num_beams < 1:
        problems.append(f"num_beams: expected >= 1, found {num_beams}")
    if max_new_tokens < 1:
        problems.append(f"max_new_tokens: expected >= 1, found {max_new_tokens}")
    elif len(prompt) + max_new_tokens > context:
        problems.append(
            f"prompt: {len(prompt)} tokens + max_new_tokens={max_new_tokens} exceed the model's context "
            f"(max_position_embeddings={context})"
        )
    if not any(early_stopping is allowed or early_stopping == allowed == "never" for allowed in EARLY_STOPPING):
        problems.append(f"early_stopping: expected one of False, True, 'never', found {early_stopping!r}")
    if not 1 <= num_return_sequences <= max(num_beams, 1):
        problems.append(f"num_return_sequences: expected 1..num_beams ({num_beams}), found {num_return_sequences}")
    if problems:
        raise MegatronSotaError("beam search: " + "; ".join(problems))

