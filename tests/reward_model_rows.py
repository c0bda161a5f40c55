"""The reward-model tests' tiny model and padded preference rows (shared by the unit, conversion and TP tests)."""

from __future__ import annotations

from typing import Tuple

import torch

from megatron_sota.config.job import JobConfig

VOCAB = 128
PAD, EOD = 0, VOCAB - 1  # NullTokenizer's eod is its last id; padding uses another id
HEAD_SEED = 7
LENGTHS = (9, 6, 12, 4)  # chosen rows, then rejected rows, as TRL's collator stacks them


def tiny_reward_job(tp: int = 1, sp: bool = False) -> JobConfig:
    job = JobConfig()
    job.tokenizer.type, job.tokenizer.vocab_size = "NullTokenizer", VOCAB
    model = job.model
    model.num_layers, model.hidden_size, model.ffn_hidden_size = 2, 64, 128
    model.num_attention_heads, model.num_query_groups, model.vocab_size = 4, 2, VOCAB
    model.max_position_embeddings, model.init_method_std = 64, 0.05
    job.parallel.tp, job.parallel.sp = tp, sp
    job.runtime.device = "cpu"
    return job


def padded_pairs() -> Tuple[torch.Tensor, torch.Tensor]:
    """[4, 12] token ids right-padded with PAD, each row ending in EOD, and the [4, 12] real-token mask."""
    width = max(LENGTHS)
    generator = torch.Generator().manual_seed(3)
    tokens = torch.full((len(LENGTHS), width), PAD)
    real = torch.zeros((len(LENGTHS), width), dtype=torch.long)
    for row, length in enumerate(LENGTHS):
        tokens[row, : length - 1] = torch.randint(1, EOD, (length - 1,), generator=generator)
        tokens[row, length - 1] = EOD
        real[row, :length] = 1
    return tokens, real


def build_reward_model(job: JobConfig):
    """The reward model's one chunk at this session's layout (fp32, local layer spec)."""
    from megatron_sota.model.gpt_builder import build_model_chunks, build_transformer_config, padded_vocab_size
    from megatron_sota.posttrain.reward_head import reward_model_class

    config = build_transformer_config(job.model, job.parallel, job.precision, "none", "cpu", False)
    padded = padded_vocab_size(VOCAB, job.model.make_vocab_size_divisible_by, job.parallel.tp)
    (model,) = build_model_chunks(job.model, config, padded, 16, job.train.seed, False, model_class=reward_model_class(HEAD_SEED))
    return model
