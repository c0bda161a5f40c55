"""Scores token sequences with a megatron-core model through its pipeline schedule, at any TP/PP layout.

The same code scores a checkpoint loaded for inference (PP=1) and the weights being trained
(any TP/PP, virtual stages included), so in-loop and offline evaluation agree. Log-probabilities
are taken over the tokenizer's vocabulary only: the padding rows of the output layer are
excluded from the softmax, as they are absent from a Hugging Face export.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import torch
from megatron.core import parallel_state, tensor_parallel

from megatron_sota.checkpointing.fsdp_state import is_fsdp
from megatron_sota.parallelize.pipeline import run_schedule


@dataclass
class ScoredSequence:
    logprobs: torch.Tensor
    """[len - 1] float64: log p(token[i + 1] | tokens[: i + 1])."""
    greedy: torch.Tensor
    """[len - 1] long: the most likely next token after each prefix (lowest id on ties)."""


def vocab_parallel_argmax(logits: torch.Tensor, vocab_start: int) -> torch.Tensor:
    """Global argmax over a vocabulary split across tensor-parallel ranks (the lowest id among equal maxima)."""
    local_max, local_index = logits.max(dim=-1)
    group = parallel_state.get_tensor_model_parallel_group()
    global_max = local_max.clone()
    torch.distributed.all_reduce(global_max, op=torch.distributed.ReduceOp.MAX, group=group)
    candidate = torch.where(local_max == global_max, local_index + vocab_start, torch.iinfo(torch.long).max)
    torch.distributed.all_reduce(candidate, op=torch.distributed.ReduceOp.MIN, group=group)
    return candidate


def _score_outputs(targets: torch.Tensor, vocab_size: int, logits: torch.Tensor):
    """Loss function of the last stage: per-token target log-probs and greedy ids, [micro_batch, seq]."""
    logits = logits.float()  # [b, s, vocab / tp]
    local = logits.shape[-1]
    start = parallel_state.get_tensor_model_parallel_rank() * local
    padding_rows = torch.arange(start, start + local, device=logits.device) >= vocab_size
    logits = logits.masked_fill(padding_rows, float("-inf"))
    greedy = vocab_parallel_argmax(logits, start)
    # vocab_parallel_cross_entropy works in place on its input: give it its own copy.
    logprobs = -tensor_parallel.vocab_parallel_cross_entropy(logits.clone(), targets)
    return torch.zeros((), device=logits.device), {"logprobs": logprobs, "greedy": greedy}


def _forward_step(device: torch.device, vocab_size: int, data_iterator: Iterator[dict], model):
    batch = next(data_iterator)
    tokens = batch["tokens"].to(device)
    positions = torch.arange(tokens.shape[1], device=device).unsqueeze(0).expand_as(tokens)
    output = model(tokens, positions, None)
    return output, partial(_score_outputs, batch["targets"].to(device), vocab_size)


def _stack_outputs(collected: List[dict]) -> torch.Tensor:
    """The last stage's [2, rows, length]: log-probs, then greedy ids (as float64, exact below 2**53)."""
    return torch.stack([
        torch.cat([c["logprobs"] for c in collected]).to(torch.float64),
        torch.cat([c["greedy"] for c in collected]).to(torch.float64),
    ])


def score_in_batches(
    sequences: Sequence[Sequence[int]], max_length: int, per_call: int,
    score_call: Callable[[List[Sequence[int]]], List[ScoredSequence]], progress: Optional[Callable[[int], None]] = None,
) -> List[ScoredSequence]:
    """A scorer's `score`: checks each sequence has 2 to max_length + 1 tokens, runs `score_call` on `per_call` of them at
    a time (longest first, so similar lengths share a batch) and returns the results in input order; `progress` is
    called with the number finished after each call."""
    for seq in sequences:
        if not 2 <= len(seq) <= max_length + 1:
            raise ValueError(f"a scored sequence has {len(seq)} tokens; expected 2..{max_length + 1}")
    results: List[ScoredSequence] = [None] * len(sequences)  # type: ignore[list-item]
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    for begin in range(0, len(order), per_call):
        chunk = order[begin : begin + per_call]
        for i, item in zip(chunk, score_call([sequences[i] for i in chunk])):
            results[i] = item
        if progress is not None:
            progress(len(chunk))
    return results


class PipelineScorer:
    """Runs batches of right-padded sequences through the model chunks of this rank.

    Every rank of a model replica (its TP and PP ranks) must call `score` with the same
    sequences; every one of them gets the results (the last stage broadcasts them).
    """

    def __init__(self, models: List[torch.nn.Module], vocab_size: int, micro_batch_size: int, max_length: int, device: torch.device):
        self.models = models
        self.vocab_size = vocab_size
        self.micro_batch_size = micro_batch_size
        self.device = device
        # Sharded weights are gathered inside each forward, a collective over the data-parallel ranks: they must all
        # run the same forwards, so none takes a share of the items (evaluation/runner.over_data_parallel).
        self.split_over_data_parallel = not is_fsdp(models)
        tp = parallel_state.get_tensor_model_parallel_world_size()
        # Sequence parallelism splits the sequence over TP ranks, and FP8 GEMMs want each rank's
        # rows in multiples of 8-16: padded lengths are multiples of 16 * tp (right padding is free).
        self._length_multiple = 16 * tp
        self.max_length = max_length // self._length_multiple * self._length_multiple
        self._pp = parallel_state.get_pipeline_model_parallel_world_size()

    def score(self, sequences: Sequence[Sequence[int]], progress: Optional[Callable[[int], None]] = None) -> List[ScoredSequence]:
        """Log-probs and greedy next tokens of each sequence (2 to max_length + 1 tokens: the last is only a target).

        `progress` is called with the number of sequences finished after each schedule run.
        """
        return score_in_batches(sequences, self.max_length, self.micro_batch_size * max(self._pp, 1), self._score_call, progress)

    @torch.no_grad()
    def _score_call(self, sequences: List[Sequence[int]]) -> List[ScoredSequence]:
        longest = max(len(s) for s in sequences) - 1
        length = -(-longest // self._length_multiple) * self._length_multiple
        mbs = self.micro_batch_size
        # A pipeline needs whole micro-batches, and the interleaved schedule a multiple of PP of them.
        rows = -(-len(sequences) // mbs) * mbs
        rows = -(-rows // (mbs * self._pp)) * (mbs * self._pp)
        tokens = torch.zeros(rows, length, dtype=torch.long)
        targets = torch.zeros(rows, length, dtype=torch.long)
        for row, seq in enumerate(sequences):
            seq = torch.as_tensor(list(seq), dtype=torch.long)
            tokens[row, : len(seq) - 1] = seq[:-1]
            targets[row, : len(seq) - 1] = seq[1:]
        batches = [{"tokens": tokens[i : i + mbs], "targets": targets[i : i + mbs]} for i in range(0, rows, mbs)]
        outputs = self._run_schedule(batches, length)
        return [ScoredSequence(outputs[0][row, : len(seq) - 1], outputs[1][row, : len(seq) - 1].long()) for row, seq in enumerate(sequences)]

    def _run_schedule(self, batches: List[dict], length: int) -> Tuple[torch.Tensor, torch.Tensor]:
        rows = len(batches) * self.micro_batch_size
        was_training = [model.training for model in self.models]
        for model in self.models:
            model.eval()
        try:
            packed = run_schedule(
                self.models, partial(_forward_step, self.device, self.vocab_size), [iter(batches) for _ in self.models],
                len(batches), self.micro_batch_size, length, forward_only=True, collect=_stack_outputs,
                result_shape=(2, rows, length), device=self.device,
            )
        finally:
            for model, training in zip(self.models, was_training):
                model.train(training)
        packed = packed.cpu()
        return packed[0], packed[1]

    def greedy_continue(self, prompts: Sequence[Sequence[int]], max_new_tokens: int, finished: Callable[[List[int]], bool]) -> List[List[int]]:
        """Greedy continuations, recomputing each sequence every step (no KV cache: works at any PP).

        A row stops when `finished(new_tokens)` says so or at max_new_tokens (or the context).
        """
        rows = [list(p) for p in prompts]
        new: List[List[int]] = [[] for _ in prompts]
        active = list(range(len(prompts)))
        for _ in range(max_new_tokens):
            active = [i for i in active if len(rows[i]) < self.max_length]
            if not active:
                break
            # A one-token prompt has no target to score: pad the input with a dummy last token.
            scored = self.score([rows[i] + [0] for i in active])
            for i, item in zip(active, scored):
                token = int(item.greedy[len(rows[i]) - 1])
                rows[i].append(token)
                new[i].append(token)
            active = [i for i in active if not finished(new[i])]
            if not active:
                break
        return new
