"""Preference pairs built straight from token ids, and the small CPU reward-model job that trains on them.

Stands in for the records and chat-template layer so that the pair data path and the trainer can be tested on
their own; it must not template or tokenize anything.
"""

from __future__ import annotations

import torch

from megatron_sota.config.job import JobConfig
from megatron_sota.config.posttrain import PosttrainConfig
from megatron_sota.posttrain.pair_data import Pair
from tests.posttrain.examples import VOCAB, example, replace_reader, sft_job

GOOD, BAD = 5, 6
"""The last completion token of every chosen / rejected sequence: something a reward model can learn."""


def pairs(count: int, seed: int, longest: int = 20) -> list:
    """`count` pairs sharing a prompt; ids avoid 0 (the pad id the export is given) and the eod."""
    generator = torch.Generator().manual_seed(seed)
    made = []
    for line in range(count):
        length = int(torch.randint(2, 8, (1,), generator=generator))
        prompt = torch.randint(1, VOCAB - 1, (length,), generator=generator)
        sides = []
        for last in (GOOD, BAD):
            n = int(torch.randint(2, longest - len(prompt), (1,), generator=generator))
            completion = torch.randint(7, VOCAB - 1, (n,), generator=generator).tolist()
            sides.append(example(prompt.tolist() + completion + [last], len(prompt), f"pairs.jsonl:{line + 1}"))
        made.append(Pair(sides[0], sides[1], margin=float(line % 3) / 2))
    return made


def fake_encode_pair_files(paths, chat_template, tokenizer, max_tokens) -> list:
    """posttrain.pair_data.encode_pair_files for files named train*/valid*: 24 / 6 pairs of their own seeds."""
    return [p for path in paths for p in pairs(24 if "train" in path else 6, seed=len(path))]


def use_fake_pairs(monkeypatch=None) -> None:
    """In this process, the reward objective reads fake_encode_pair_files' pairs (multi-rank probes call it). See replace_reader."""
    replace_reader("megatron_sota.posttrain.reward", "encode_pair_files", fake_encode_pair_files, monkeypatch)


def rm_job(**posttrain) -> JobConfig:
    """SFT's small CPU job (tests/posttrain/examples.py) as a 2-layer reward model of tests/reward_model_rows.py's
    sizes, 4 pairs per step."""
    job = sft_job()
    job.posttrain = PosttrainConfig(objective="rm", train_files=["train.jsonl"], **posttrain)
    model = job.model
    model.hidden_size, model.ffn_hidden_size, model.num_attention_heads, model.num_query_groups = 64, 128, 4, 2
    model.max_position_embeddings, model.init_method_std = 64, 0.05
    job.train.seq_length, job.train.global_batch_size = 24, 4
    return job
