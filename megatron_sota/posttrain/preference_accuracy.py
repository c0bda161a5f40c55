"""Held-out preference accuracy of a DPO model per task, from Hugging Face exports of the policy and its reference.

DPO's implicit reward of a completion is beta * (log p_policy - log p_reference) summed over its tokens; a pair
counts as right when the chosen completion's reward exceeds the rejected one's (TRL's rewards/accuracies). The
records' optional `task` key groups the pairs. It reads models and files only; it must not train.

  python tools/preference_accuracy.py --policy <hf dir> --reference <hf dir> --files valid.jsonl [--beta 0.1] [--json]
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from typing import Dict, List, Sequence

import torch

from megatron_sota.data.tokenizer import build_tokenizer
from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.pair_data import encode_pair_files

logger = logging.getLogger(__name__)
ALL = "all"


def record_tasks(paths: Sequence[str]) -> List[str]:
    """Each preference record's `task` (ALL when it has none), in the order read_preference_records reads them."""
    tasks = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            tasks += [str(json.loads(line).get("task", ALL)) for line in handle if line.strip()]
    return tasks


@torch.no_grad()
def pair_logps(model_dir: str, pairs: Sequence, vocab_size: int) -> torch.Tensor:
    """[pairs, 2] float64: each pair's (chosen, rejected) completion log-prob under the HF causal LM in
    `model_dir` (float32), over the tokenizer's `vocab_size` ids, as DPO's loss sums them."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    table = torch.zeros(len(pairs), 2, dtype=torch.float64)
    for k, pair in enumerate(pairs):
        for side, encoded in enumerate((pair.chosen, pair.rejected)):
            ids = torch.tensor([encoded.ids])
            logps = torch.log_softmax(model(ids).logits[0, :-1, :vocab_size].float(), dim=-1)
            token = logps.gather(-1, ids[0, 1:, None])[:, 0]
            table[k, side] = token[torch.tensor(encoded.trained[1:])].sum().double()
    return table


def accuracy_table(policy: torch.Tensor, reference: torch.Tensor, tasks: Sequence[str], beta: float) -> Dict[str, dict]:
    """Per task and ALL: pairs, DPO accuracy (implicit reward of chosen > rejected), mean reward margin, and the
    reference's own likelihood accuracy (log p_ref(chosen) > log p_ref(rejected)), for comparison."""
    rewards = beta * (policy - reference)
    right = rewards[:, 0] > rewards[:, 1]
    margins = rewards[:, 0] - rewards[:, 1]
    reference_right = reference[:, 0] > reference[:, 1]
    groups: Dict[str, List[int]] = defaultdict(list)
    for k, task in enumerate(tasks):
        groups[task].append(k)
    if len(groups) > 1 or ALL not in groups:
        groups[ALL] = list(range(len(tasks)))
    return {
        task: {
            "pairs": len(rows), "accuracy": right[rows].double().mean().item(),
            "margin": margins[rows].mean().item(), "reference_accuracy": reference_right[rows].double().mean().item(),
        }
        for task, rows in groups.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", required=True, help="HF export of the DPO model (its tokenizer and chat template)")
    parser.add_argument("--reference", required=True, help="HF export of the model DPO started from")
    parser.add_argument("--files", nargs="+", required=True, help="preference JSONL files (held-out pairs)")
    parser.add_argument("--beta", type=float, default=0.1, help="posttrain.beta of the DPO run (default 0.1)")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        tokenizer = build_tokenizer("HuggingFaceTokenizer", args.policy)
        pairs = encode_pair_files(args.files, args.policy, tokenizer, 1 << 30)
    except MegatronSotaError as err:
        logger.error(str(err))
        return 2
    tasks = record_tasks(args.files)
    policy = pair_logps(args.policy, pairs, tokenizer.vocab_size)
    reference = pair_logps(args.reference, pairs, tokenizer.vocab_size)
    table = accuracy_table(policy, reference, tasks, args.beta)
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"{'task':<14} {'pairs':>5} {'accuracy':>8} {'margin':>7} {'reference':>9}")
    for task, row in table.items():
        print(f"{task:<14} {row['pairs']:>5} {row['accuracy']:>8.3f} {row['margin']:>7.3f} "
              f"{row['reference_accuracy']:>9.3f}")
    return 0
