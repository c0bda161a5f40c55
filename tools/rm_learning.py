"""Measures a reward model's held-out pairwise accuracy on the repository's right-vs-wrong preferences
(posttrain/example_data.py, six instruction tasks), overall and per task, before and after a short `posttrain=rm`
run of a tiny randomly initialised model (CPU, under a minute); prints one JSON line.

  python tools/rm_learning.py --out /tmp/rm_learning [--epochs 1] [--lr 1e-3] [--per-task 200]

A measurement for the README, not a test: it trains its own throwaway tokenizer and writes under --out only.
Per task, each run's last checkpoint is exported to Hugging Face and scored by posttrain/preference_accuracy.py.
"""

from __future__ import annotations

import argparse
import json
import os

from megatron_sota.config.job import JobConfig
from megatron_sota.config.posttrain import PosttrainConfig
from megatron_sota.conversion.export import ExportOptions, export_checkpoint
from megatron_sota.data.byte_level_bpe_training import train_byte_level_bpe
from megatron_sota.posttrain.example_data import write_example_data
from megatron_sota.posttrain.preference_accuracy import reward_model_table
from megatron_sota.posttrain.run import posttrain


def _tokenizer(data, out: str) -> str:
    """A byte-level BPE with ChatML's turn tokens (and a pad token), trained on the example files themselves."""
    corpus = os.path.join(out, "corpus.jsonl")
    with open(corpus, "w") as handle:
        for path in (data.preference_train, data.sft_train):
            for line in open(path):
                handle.write(json.dumps({"text": line}) + "\n")
    path = os.path.join(out, "tokenizer")
    train_byte_level_bpe([corpus], path, vocab_size=400, special_tokens=("<|im_start|>", "<|im_end|>"), quiet=True)
    return path


def _job(data, tokenizer: str, epochs: int, lr: float, iters: int = 0) -> JobConfig:
    """tests/posttrain/preference_learning.py's sizes: 2 layers of width 64, 16 pairs per step, 3 warm-up steps."""
    job = JobConfig()
    job.posttrain = PosttrainConfig(objective="rm", train_files=[data.preference_train],
                                    valid_files=[data.preference_valid], epochs=epochs)
    job.tokenizer.type, job.tokenizer.model = "HuggingFaceTokenizer", tokenizer
    job.model.num_layers, job.model.hidden_size, job.model.ffn_hidden_size = 2, 64, 128
    job.data.num_workers, job.runtime.device = 0, "cpu"
    job.train.seq_length, job.train.micro_batch_size, job.train.global_batch_size = 128, 8, 16
    job.train.iters, job.train.eval_interval = iters, 10**6  # validation at the last step only
    job.optimizer.lr, job.scheduler.warmup_iters = lr, 3
    job.logging.tensorboard, job.checkpoint.save_at_end = False, True
    return job


def _measure(job: JobConfig, run_dir: str, valid_file: str) -> dict:
    """The run's last validation (loss and TRL's RM metrics) and its exported model's accuracy per task."""
    summary = posttrain(job, run_dir)
    hf_dir = os.path.join(run_dir, "hf")
    export_checkpoint(ExportOptions(load=os.path.join(run_dir, "checkpoints"), save=hf_dir, dtype="fp32",
                                    overwrite=True, show_progress=False))
    tasks = reward_model_table(hf_dir, [valid_file])
    return {"val_loss": summary.val_losses[-1], **summary.val_metrics[-1],
            "tasks": {task: round(row["accuracy"], 3) for task, row in tasks.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--per-task", type=int, default=200, help="preference questions per task (a fifth held out)")
    args = parser.parse_args()
    data = write_example_data(os.path.join(args.out, "data"), preferences_per_task=args.per_task)
    tokenizer = _tokenizer(data, args.out)
    # The untrained model: one step at lr 0 leaves the random initialisation as it is.
    valid = data.preference_valid
    before = _measure(_job(data, tokenizer, 1, 0.0, iters=1), os.path.join(args.out, "before"), valid)
    after = _measure(_job(data, tokenizer, args.epochs, args.lr), os.path.join(args.out, "after"), valid)
    print(json.dumps({"before": before, "after": after, "epochs": args.epochs, "lr": args.lr,
                      "per_task": args.per_task}))


if __name__ == "__main__":
    main()
