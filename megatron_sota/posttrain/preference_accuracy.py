"""Held-out preference accuracy per task of a DPO model or a reward model, from Hugging Face exports.

DPO's implicit reward of a completion is beta * (log p_policy - log p_reference) summed over its tokens; a reward
model's is its score (LlamaForSequenceClassification). A pair counts as right when the chosen completion's reward
exceeds the rejected one's (TRL's rewards/accuracies and RewardTrainer accuracy). The records' optional `task` key
groups the pairs. It reads models and files only; it must not train (the command: cli/preference_accuracy.py).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Sequence

import torch

from megatron_sota.data.tokenizer import build_tokenizer
from megatron_sota.posttrain.pair_data import encode_pair_files
from megatron_sota.posttrain.records import read_preference_records

ALL = "all"


def record_tasks(paths: Sequence[str]) -> List[str]:
    """Each preference record's `task` (ALL when it has none), in the order encode_pair_files encodes them."""
    return [record.task or ALL for record in read_preference_records(paths)]


def _per_side(pairs: Sequence, value) -> torch.Tensor:
    """[pairs, 2] float64: value(ids [1, n], encoded) of each pair's chosen and rejected sequence."""
    table = torch.zeros(len(pairs), 2, dtype=torch.float64)
    for k, pair in enumerate(pairs):
        for side, encoded in enumerate((pair.chosen, pair.rejected)):
            table[k, side] = value(torch.tensor([encoded.ids]), encoded).double()
    return table


@torch.no_grad()
def pair_logps(model_dir: str, pairs: Sequence, vocab_size: int) -> torch.Tensor:
    """[pairs, 2] float64: each pair's (chosen, rejected) completion log-prob under the HF causal LM in
    `model_dir` (float32), over the tokenizer's `vocab_size` ids, as DPO's loss sums them."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def completion_logp(ids, encoded):
        logps = torch.log_softmax(model(ids).logits[0, :-1, :vocab_size].float(), dim=-1)
        token = logps.gather(-1, ids[0, 1:, None])[:, 0]
        return token[torch.tensor(encoded.trained[1:])].sum()

    return _per_side(pairs, completion_logp)


@torch.no_grad()
def pair_scores(model_dir: str, pairs: Sequence) -> torch.Tensor:
    """[pairs, 2] float64: each pair's (chosen, rejected) score under the HF reward model in `model_dir` (float32),
    one unpadded sequence at a time: the score at its last token, the one our reward model reads."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    return _per_side(pairs, lambda ids, _encoded: model(ids).logits[0, 0].float())


def pair_table(rewards: torch.Tensor, tasks: Sequence[str]) -> Dict[str, dict]:
    """Per task and ALL, from [pairs, 2] (chosen, rejected) rewards: pairs, accuracy (chosen > rejected; a tie is
    wrong) and mean reward margin."""
    right = rewards[:, 0] > rewards[:, 1]
    margins = rewards[:, 0] - rewards[:, 1]
    groups: Dict[str, List[int]] = defaultdict(list)
    for k, task in enumerate(tasks):
        groups[task].append(k)
    if len(groups) > 1 or ALL not in groups:
        groups[ALL] = list(range(len(tasks)))
    return {
        task: {
            "pairs": len(rows), "accuracy": right[rows].double().mean().item(), "margin": margins[rows].mean().item(),
        }
        for task, rows in groups.items()
    }


def accuracy_table(policy: torch.Tensor, reference: torch.Tensor, tasks: Sequence[str], beta: float) -> Dict[str, dict]:
    """pair_table of DPO's implicit rewards, with the reference's own likelihood accuracy
    (log p_ref(chosen) > log p_ref(rejected)) per task, for comparison."""
    table = pair_table(beta * (policy - reference), tasks)
    reference_table = pair_table(reference, tasks)
    for task, row in table.items():
        row["reference_accuracy"] = reference_table[task]["accuracy"]
    return table


def table_text(table: Dict[str, dict]) -> str:
    """The table as aligned columns, one task a line (the reference column where the table has one)."""
    reference = all("reference_accuracy" in row for row in table.values())
    lines = [f"{'task':<14} {'pairs':>5} {'accuracy':>8} {'margin':>7}" + (f" {'reference':>9}" if reference else "")]
    for task, row in table.items():
        line = f"{task:<14} {row['pairs']:>5} {row['accuracy']:>8.3f} {row['margin']:>7.3f}"
        lines.append(line + (f" {row['reference_accuracy']:>9.3f}" if reference else ""))
    return "\n".join(lines)


def dpo_table(policy_dir: str, reference_dir: str, files: Sequence[str], beta: float) -> Dict[str, dict]:
    """accuracy_table of the DPO model in `policy_dir` against its reference in `reference_dir` on the preference
    `files`, encoded with the policy's tokenizer and chat template."""
    tokenizer = build_tokenizer("HuggingFaceTokenizer", policy_dir)
    pairs = encode_pair_files(files, policy_dir, tokenizer, 1 << 30)
    policy = pair_logps(policy_dir, pairs, tokenizer.vocab_size)
    reference = pair_logps(reference_dir, pairs, tokenizer.vocab_size)
    return accuracy_table(policy, reference, record_tasks(files), beta)


def reward_model_table(model_dir: str, files: Sequence[str]) -> Dict[str, dict]:
    """pair_table of the HF reward model in `model_dir` on the preference `files`, encoded with its tokenizer and
    chat template."""
    tokenizer = build_tokenizer("HuggingFaceTokenizer", model_dir)
    pairs = encode_pair_files(files, model_dir, tokenizer, 1 << 30)
    return pair_table(pair_scores(model_dir, pairs), record_tasks(files))
