"""A rank that draws sampled answers from a checkpoint through the evaluation model, in different batches and seeds."""

from __future__ import annotations

import os
from typing import Dict, List

from megatron_sota.data.tokenizer import build_configured_tokenizer
from megatron_sota.evaluation.eval_models import from_inference_model
from megatron_sota.inference.checkpoint_model import inference_parallel, load_inference_model
from megatron_sota.runtime.session import distributed_session

PROMPTS = ["import os\nimport", "def main():\n    ", "class Error(Exception):\n", "for i in range("]


def sampled_answers(rank: int, checkpoint: str) -> Dict[str, List[List[int]]]:
    """Eight tokens at temperature 1 for each prompt: together (seeds 1..4), alone, in another order, other seeds."""
    with distributed_session(inference_parallel(int(os.environ["WORLD_SIZE"])), "cpu") as session:
        model = load_inference_model(checkpoint, session.device, "fp32")
        tokenizer = build_configured_tokenizer(model.job.tokenizer, model.job.model.vocab_size)
        sample = from_inference_model(model, tokenizer, 2).generate_sampled
        prompts = [tokenizer.tokenize(p) for p in PROMPTS]
        seeds = [1, 2, 3, 4]
        return {
            "together": sample(prompts, 8, 1.0, 1.0, seeds),
            "alone": [sample([p], 8, 1.0, 1.0, [s])[0] for p, s in zip(prompts, seeds)],
            "reversed": sample(prompts[::-1], 8, 1.0, 1.0, seeds[::-1])[::-1],
            "other_seeds": sample(prompts, 8, 1.0, 1.0, [11, 12, 13, 14]),
        }
