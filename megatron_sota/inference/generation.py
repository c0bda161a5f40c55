"""Autoregressive generation from an InferenceModel, with or without megatron-core's static KV cache.

With the cache the prompt is encoded once and each new token costs one position's compute;
without it the whole sequence is recomputed every step (the reference the cache is tested
against). Every tensor-parallel rank draws the same token: logits are gathered over TP and the
draw uses a generator seeded identically on every rank.

Prompts of different lengths share a batch by left padding: every row's prompt ends at the same
position, so each step appends one column for all rows. The pads are masked out of attention
and positions count real tokens only, so a padded row generates what it would alone (RoPE is
relative, so the shift of its cache positions changes nothing but float rounding).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.inference.checkpoint_model import InferenceModel
from megatron_sota.inference.sampling import SamplingSettings, next_tokens

Prompts = Union[torch.Tensor, Sequence[Sequence[int]]]
"""[batch, len] token ids (rows of equal length), or one list of token ids per prompt (any lengths)."""

StepHook = Callable[[torch.Tensor, torch.Tensor], Optional[Sequence[int]]]
"""(chosen [batch] token ids of this step, running [batch] bool: rows not finished before it) -> rows to end now
(reason 'stop_string', the chosen token kept), or None. Called once per step, before the stop-id and budget checks."""


@dataclass
class Generated:
    tokens: List[List[int]]
    """New token ids per prompt (in input order), the stop token included when one ended the row."""
    stop_reasons: List[str] = field(default_factory=list)
    """'stop_id', 'length', or 'stop_string' (ended by `on_step`) per prompt."""
    seconds: float = 0.0
    """Wall time of the whole batch."""
    logprobs: Optional[List[List[float]]] = None
    """With return_logprobs: per new token, its log-probability under the model's own distribution (fp32
    log-softmax of the raw logits, before repetition penalty, temperature and filters), as `tokens`."""


def left_pad(prompts: Prompts) -> Tuple[torch.Tensor, List[int]]:
    """([batch, longest] token ids, each row's number of left pads).

    A row is padded with copies of its own first token: attention never sees the pads, and the
    repetition penalty, which looks at whole rows, then sees only tokens the prompt holds.
    """
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2 or 0 in prompts.shape:
            raise MegatronSotaError(f"prompts: expected token ids [batch >= 1, len >= 1], found shape {tuple(prompts.shape)}")
        return prompts, [0] * prompts.shape[0]
    rows = [torch.as_tensor(list(p), dtype=torch.long) for p in prompts]
    if not rows:
        raise MegatronSotaError("prompts: expected at least one prompt, found none")
    for number, row in enumerate(rows):
        if row.numel() == 0:
            raise MegatronSotaError(f"prompt {number}: expected at least one token id, found none")
    width = max(row.numel() for row in rows)
    padded = torch.stack([torch.cat([row[:1].expand(width - row.numel()), row]) for row in rows])
    return padded, [width - row.numel() for row in rows]


def _budgets(max_new_tokens: Union[int, Sequence[int]], lengths: List[int], context: int) -> List[int]:
    """New tokens allowed per row; every row's prompt plus its new tokens must fit in the context."""
    budgets = [max_new_tokens] * len(lengths) if isinstance(max_new_tokens, int) else [int(n) for n in max_new_tokens]
    if len(budgets) != len(lengths):
        raise MegatronSotaError(f"max_new_tokens: expected one count per prompt ({len(lengths)}), found {len(budgets)}")
    for row, (length, new) in enumerate(zip(lengths, budgets)):
        if length + new > context:
            raise MegatronSotaError(
                f"prompt {row}: {length} prompt tokens + max_new_tokens={new} exceed the model's context "
                f"(max_position_embeddings={context})"
            )
    return budgets


def generate(
    model: InferenceModel,
    prompts: Prompts,
    max_new_tokens: Union[int, Sequence[int]],
    settings: SamplingSettings,
    stop_ids: Sequence[int] = (),
    seed: int = 0,
    use_cache: bool = True,
    return_logprobs: bool = False,
    row_seeds: Optional[Sequence[int]] = None,
    on_step: Optional[StepHook] = None,
) -> Generated:
    """Continues each prompt by up to max_new_tokens (one count for all, or one per prompt).

    `prompts`: a [batch, len] tensor, or lists of token ids of any lengths (left padded here).
    Greedy rows do not depend on their batch; sampled rows share one seeded generator, so a
    row's draws depend on the batch it is in (equal for equal batches and seeds), unless `row_seeds`
    gives each row a generator of its own (then `seed` is unused and a row samples what it would alone).
    `on_step` sees each step's tokens as they are chosen (streaming) and may end rows (stop strings, cancellation).
    """
    from megatron.core.inference.contexts import StaticInferenceContext

    start = time.perf_counter()
    padded, pads = left_pad(prompts)
    batch, width = padded.shape
    budgets = _budgets(max_new_tokens, [width - p for p in pads], model.job.model.max_position_embeddings)
    steps = max(budgets)
    pad_lengths = pads if any(pads) else None  # unpadded batches keep the mask-free causal path
    if row_seeds is not None and len(row_seeds) != batch:
        raise MegatronSotaError(f"row_seeds: expected one seed per prompt ({batch}), found {len(row_seeds)}")
    generator = (
        torch.Generator().manual_seed(seed) if row_seeds is None
        else [torch.Generator().manual_seed(int(s)) for s in row_seeds]
    )
    sequence = padded.clone()
    stops = torch.tensor(sorted(set(stop_ids)), dtype=torch.long)
    budget = torch.tensor(budgets)
    finished = budget == 0
    reasons: List[Optional[str]] = [None] * batch
    lengths = list(budgets)  # new tokens each row keeps: its budget, or where it ended
    # Rows end at `width` together; the cache may outgrow the context when short rows have larger
    # budgets, but every row's own positions (all RoPE and learned embeddings see) stay inside it.
    cache = StaticInferenceContext(batch, width + steps) if use_cache else None
    step_input = padded
    chosen_logprobs = []
    for step in range(steps):
        logits = model.logits(step_input if use_cache else sequence, cache, pad_lengths)[:, -1].cpu()
        chosen = next_tokens(logits, sequence, settings, generator)
        if return_logprobs:
            chosen_logprobs.append(torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None]))
        if cache is not None and cache.sequence_len_offset == width:
            cache.enable_decode_mode()
        sequence = torch.cat([sequence, chosen[:, None]], dim=1)
        ended = on_step(chosen, ~finished) if on_step is not None else None
        for row in ended or ():
            if not finished[row]:
                finished[row], reasons[row], lengths[row] = True, "stop_string", step + 1
        for row in torch.nonzero(~finished & torch.isin(chosen, stops)).flatten().tolist():
            finished[row], reasons[row], lengths[row] = True, "stop_id", step + 1
        finished |= budget == step + 1
        if bool(finished.all()):
            break
        step_input = chosen[:, None]
    tokens = [sequence[row, width : width + length].tolist() for row, length in enumerate(lengths)]
    logprobs = None
    if return_logprobs:
        table = torch.cat(chosen_logprobs, dim=1)
        logprobs = [table[row, : len(ids)].tolist() for row, ids in enumerate(tokens)]
    return Generated(tokens, [r or "length" for r in reasons], time.perf_counter() - start, logprobs)
