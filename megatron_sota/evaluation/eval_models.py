"""The two ways to get an EvalModel: a checkpoint loaded for inference, or the model being trained.

Both score through PipelineScorer. Generation differs: the inference model has a KV cache (PP=1) and samples;
the training model recomputes each step through its pipeline schedule (any PP), greedily only.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch

from megatron_sota.evaluation.runner import ChatFormat, EvalModel
from megatron_sota.evaluation.scoring import PipelineScorer

GREEDY_BATCH = 8
"""Prompts generated together by the KV-cached path (left-padded to the longest), greedy or sampled."""


def from_inference_model(model, tokenizer, micro_batch_size: int, chat: Optional[ChatFormat] = None) -> EvalModel:
    """`model`: a megatron_sota.inference InferenceModel (any TP, PP=1); `chat`: for tasks with `chat: true`."""
    from megatron_sota.inference.generation import generate
    from megatron_sota.inference.sampling import SamplingSettings

    greedy = SamplingSettings(temperature=0.0, top_k=0, top_p=1.0, repetition_penalty=1.0)
    scorer = PipelineScorer([model.model], model.vocab_size, micro_batch_size, model.job.model.max_position_embeddings, model.device)

    def batched(prompts: List[List[int]], max_new_tokens: int, settings, seeds: Optional[List[int]] = None) -> List[List[int]]:
        # row_seeds: each sampled row draws from its own generator, so an answer does not depend on its batch
        out: List[List[int]] = []
        for begin in range(0, len(prompts), GREEDY_BATCH):
            row_seeds = None if seeds is None else seeds[begin : begin + GREEDY_BATCH]
            batch = prompts[begin : begin + GREEDY_BATCH]
            out.extend(generate(model, batch, max_new_tokens, settings, stop_ids=[tokenizer.eod], row_seeds=row_seeds).tokens)
        return out

    def generate_greedy(prompts: List[List[int]], max_new_tokens: int, finished: Callable[[List[int]], bool]) -> List[List[int]]:
        # `finished` (stop strings) is applied by the caller to the text; the cache path stops at end-of-document.
        return batched(prompts, max_new_tokens, greedy)

    def generate_sampled(prompts: List[List[int]], max_new_tokens: int, temperature: float, top_p: float, seeds: List[int]) -> List[List[int]]:
        settings = SamplingSettings(temperature=temperature, top_k=0, top_p=top_p, repetition_penalty=1.0)
        return batched(prompts, max_new_tokens, settings, seeds)

    return EvalModel(scorer, generate_greedy, tokenizer, chat, generate_sampled)


def from_training_models(models: list, tokenizer, micro_batch_size: int, max_length: int, device: torch.device) -> EvalModel:
    """`models`: this rank's megatron-core model chunks of the run being trained (any TP/PP)."""
    scorer = PipelineScorer(models, tokenizer.vocab_size, micro_batch_size, max_length, device)
    return EvalModel(scorer, scorer.greedy_continue, tokenizer)
