"""The small CPU jobs of the PPO/GRPO tests: a chat tokenizer, the arithmetic prompts (posttrain/example_rl_data.py),
a short SFT policy and a reward model trained here, and the RL job on them, with a probe for multi-rank runs.

It builds and runs jobs; it must not assert.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
from dataclasses import dataclass
from typing import List

import torch

from megatron_sota.config.job import JobConfig
from megatron_sota.config.posttrain import PosttrainConfig
from megatron_sota.posttrain.example_rl_data import arithmetic_prompt_records, split_pairs, write_rl_example_data
from megatron_sota.posttrain.rollout_buffer import ROLLOUT_DIR
from megatron_sota.posttrain.run import posttrain
from tests.chat_tokenizer import train_chat_tokenizer

SEED = 1234


@dataclass(frozen=True)
class RLInputs:
    tokenizer: str
    prompts: str
    """Training prompts (operand pairs never held out)."""
    heldout: str
    """80 prompts of the 20 held-out operand pairs (4 phrasings each on average): no pair of them was trained on."""
    policy: str
    """The SFT policy's checkpoint directory (checkpoint.init_from and the KL reference)."""
    reward_model: str
    """A reward model's checkpoint directory (right sums over wrong ones)."""


def base_job(tokenizer: str) -> JobConfig:
    """2 layers of width 64, untied (a reward model's and the critic's head replaces the output layer), rows of 64."""
    job = JobConfig()
    job.tokenizer.type, job.tokenizer.model = "HuggingFaceTokenizer", tokenizer
    job.model.num_layers, job.model.hidden_size, job.model.ffn_hidden_size = 2, 64, 128
    job.model.untie_embeddings_and_output_weights = True
    job.data.num_workers, job.runtime.device = 0, "cpu"
    job.logging.tensorboard, job.logging.interval = False, 1
    job.train.seq_length, job.train.eval_interval = 64, 1000
    job.checkpoint.save_at_end = False
    return job


def _preferences(path: str, count: int) -> None:
    """Right sums chosen over wrong ones (off by 1 to 3), from the training operand pairs."""
    rng = random.Random(SEED)
    train, _ = split_pairs(SEED)
    with open(path, "w") as handle:
        for record in arithmetic_prompt_records(count, SEED + 5, pairs=train):
            right = int(record["answer"])
            wrong = right + rng.choice([-3, -2, -1, 1, 2, 3])
            handle.write(json.dumps({
                "prompt": [{"role": "user", "content": record["prompt"]}],
                "chosen": [{"role": "assistant", "content": str(right)}],
                "rejected": [{"role": "assistant", "content": str(wrong)}],
            }) + "\n")


def make_inputs(directory: pathlib.Path, sft_iters: int = 120) -> RLInputs:
    """Writes the data and trains the SFT policy (sft_iters steps of 16 conversations) and a reward model
    (20 steps of 16 pairs, from scratch) under `directory`."""
    tokenizer = str(train_chat_tokenizer(directory / "tokenizer"))
    data = write_rl_example_data(str(directory / "data"), seed=SEED)
    _, held = split_pairs(SEED)
    heldout = str(directory / "data" / "heldout.jsonl")
    with open(heldout, "w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in arithmetic_prompt_records(80, SEED + 9, pairs=held))
    sft = base_job(tokenizer)
    sft.posttrain = PosttrainConfig(objective="sft", train_files=[data.sft_train])
    sft.train.micro_batch_size, sft.train.global_batch_size, sft.train.iters = 8, 16, sft_iters
    sft.optimizer.lr, sft.scheduler.warmup_iters = 3e-3, 3
    sft.checkpoint.save_at_end = True
    posttrain(sft, str(directory / "sft"))
    pairs = str(directory / "data" / "preferences.jsonl")
    _preferences(pairs, 320)
    rm = base_job(tokenizer)
    rm.posttrain = PosttrainConfig(objective="rm", train_files=[pairs])
    rm.train.micro_batch_size, rm.train.global_batch_size, rm.train.iters = 8, 16, 20
    rm.optimizer.lr, rm.scheduler.warmup_iters = 3e-3, 2
    rm.checkpoint.save_at_end = True
    posttrain(rm, str(directory / "rm"))
    return RLInputs(
        tokenizer, data.prompts_train, heldout, str(directory / "sft" / "checkpoints"), str(directory / "rm" / "checkpoints")
    )


def rl_job(inputs: RLInputs, objective: str = "ppo", **posttrain_keys) -> JobConfig:
    """posttrain=`objective` from the SFT policy: 8 prompts per rollout batch, responses of up to 8 tokens, sampled
    from the policy's own distribution, 8 rows per step in micro-batches of 4; PPO scores with the reward model,
    GRPO with exact_match over groups of 4. Four steps unless train.iters is changed."""
    job = base_job(inputs.tokenizer)
    keys = dict(objective=objective, train_files=[inputs.prompts], rollout_prompts=8, max_new_tokens=8, ppo_epochs=2)
    if objective == "grpo":
        keys.update(samples_per_prompt=4, ppo_epochs=1, kl_coef=0.04, kl_estimator="k3", kl_placement="loss",
                    reward_function="exact_match")
    else:
        keys.update(reward_model=inputs.reward_model)
    keys.update(posttrain_keys)
    job.posttrain = PosttrainConfig(**keys)
    g = job.generation
    g.temperature, g.top_p, g.top_k, g.repetition_penalty = 1.0, 1.0, 0, 1.0
    job.checkpoint.init_from = inputs.policy
    job.train.micro_batch_size, job.train.global_batch_size, job.train.iters = 4, 8, 4
    job.optimizer.lr, job.scheduler.warmup_iters = 1e-3, 0
    return job


def metric_rows(run_dir: str) -> List[dict]:
    with open(os.path.join(run_dir, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def rollout_tokens(run_dir: str) -> List[torch.Tensor]:
    """The token rows of every rollout batch the run stored, oldest first."""
    directory = os.path.join(run_dir, ROLLOUT_DIR)
    return [
        torch.load(os.path.join(directory, name), weights_only=True)["tokens"] for name in sorted(os.listdir(directory))
    ]


def rl_probe(rank: int, job: JobConfig, run_dir: str) -> dict:
    """One rank of `job` by posttrain(): its losses, and (read on rank 0) the metrics rows and rollout tokens."""
    summary = posttrain(job, run_dir)
    if rank:
        return {"losses": summary.losses}
    return {"losses": summary.losses, "rows": metric_rows(run_dir), "tokens": rollout_tokens(run_dir)}
