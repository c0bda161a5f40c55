"""Measures a reward model's held-out pairwise accuracy on the repository's arithmetic preferences before and after
a short `posttrain=rm` run of a tiny randomly initialised model (CPU, a few minutes); prints one JSON line.

A measurement for the README, not a test: it trains its own throwaway tokenizer and writes under --out only.
"""

from __future__ import annotations

import argparse
import json
import os

from megatron_sota.config.job import JobConfig
from megatron_sota.config.posttrain import PosttrainConfig
from megatron_sota.data.byte_level_bpe_training import train_byte_level_bpe
from megatron_sota.posttrain.example_data import write_example_data
from megatron_sota.posttrain.run import posttrain


def _tokenizer(data, out: str) -> str:
    """A byte-level BPE with ChatML's turn tokens, trained on the preference files themselves."""
    corpus = os.path.join(out, "corpus.jsonl")
    with open(corpus, "w") as handle:
        for path in (data.preference_train, data.sft_train):
            for line in open(path):
                handle.write(json.dumps({"text": line}) + "\n")
    path = os.path.join(out, "tokenizer")
    train_byte_level_bpe([corpus], path, vocab_size=400, special_tokens=("<|im_start|>", "<|im_end|>"), quiet=True)
    return path


def _job(data, tokenizer: str, epochs: int, lr: float, iters: int = 0) -> JobConfig:
    job = JobConfig()
    job.posttrain = PosttrainConfig(objective="rm", train_files=[data.preference_train],
                                    valid_files=[data.preference_valid], epochs=epochs)
    job.tokenizer.type, job.tokenizer.model = "HuggingFaceTokenizer", tokenizer
    m = job.model
    m.num_layers, m.hidden_size, m.ffn_hidden_size, m.num_attention_heads, m.num_query_groups = 2, 64, 128, 4, 2
    m.max_position_embeddings = 64
    job.data.num_workers, job.runtime.device = 0, "cpu"
    job.train.seq_length, job.train.micro_batch_size, job.train.global_batch_size = 64, 16, 32
    job.train.iters, job.train.eval_interval = iters, 10**6  # validation at the last step only
    job.optimizer.lr, job.scheduler.warmup_iters = lr, 2
    job.logging.tensorboard, job.checkpoint.save_at_end = False, False
    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    data = write_example_data(os.path.join(args.out, "data"))
    tokenizer = _tokenizer(data, args.out)
    before = posttrain(_job(data, tokenizer, 1, 0.0, iters=1), os.path.join(args.out, "before")).val_metrics[-1]
    after = posttrain(_job(data, tokenizer, args.epochs, args.lr), os.path.join(args.out, "after")).val_metrics[-1]
    print(json.dumps({"before": before, "after": after, "epochs": args.epochs, "lr": args.lr}))


if __name__ == "__main__":
    main()
