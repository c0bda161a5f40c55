"""Small arithmetic data made for this repository's reinforcement-learning example and learning tests: sums of two
small numbers as prompt records with an exact-match answer, and SFT conversations answering with the bare number.

Deterministic in its seed, generated locally; held-out prompts share no operand pair with training prompts or SFT
conversations. It writes TRL-format JSONL only; it must not tokenize, score or train.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from megatron_sota.atomic_files import atomic_output

PHRASINGS = (
    "What is {a} + {b}?", "Compute {a} + {b}.", "Add {a} and {b}.", "{a} + {b} = ?", "What is the sum of {a} and {b}?"
)
"""The question's wordings; each record draws one."""

Pair = Tuple[int, int]


def operand_pairs(max_operand: int = 9) -> List[Pair]:
    """Every (a, b) with 0 <= a, b <= max_operand ((3, 5) and (5, 3) are different questions)."""
    return [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]


def _questions(count: int, seed: int, pairs: Sequence[Pair]) -> List[Tuple[str, int]]:
    """(question, sum) of `count` pairs: epochs of `pairs`, each in its own seeded order (distinct while count
    <= len(pairs)), each with a seeded phrasing."""
    if not pairs:
        raise ValueError("no operand pairs to draw questions from")
    rng = random.Random(seed)
    drawn: List[Pair] = []
    while len(drawn) < count:
        epoch = list(pairs)
        rng.shuffle(epoch)
        drawn += epoch[: count - len(drawn)]
    return [(rng.choice(PHRASINGS).format(a=a, b=b), a + b) for a, b in drawn]


def arithmetic_prompt_records(
    count: int, seed: int, max_operand: int = 9, pairs: Optional[Sequence[Pair]] = None
) -> List[dict]:
    """`count` records {"prompt": "What is 3 + 5?", "answer": "8"} (a string prompt: one user message) of the
    operand `pairs` (default operand_pairs(max_operand))."""
    chosen = operand_pairs(max_operand) if pairs is None else pairs
    return [{"prompt": question, "answer": str(total)} for question, total in _questions(count, seed, chosen)]


def arithmetic_sft_conversations(
    count: int, seed: int, max_operand: int = 9, pairs: Optional[Sequence[Pair]] = None
) -> List[dict]:
    """`count` records {"messages": [user question, assistant bare sum ("8")]} of the operand `pairs`."""
    chosen = operand_pairs(max_operand) if pairs is None else pairs
    return [
        {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": str(total)}]}
        for question, total in _questions(count, seed, chosen)
    ]


@dataclass(frozen=True)
class RLExampleData:
    prompts_train: str
    prompts_valid: str
    """Every held-out operand pair once."""
    sft_train: str


def split_pairs(seed: int, max_operand: int = 9, valid_fraction: float = 0.2) -> Tuple[List[Pair], List[Pair]]:
    """(train, held-out) operand pairs: a seeded valid_fraction of operand_pairs(max_operand) is held out."""
    pairs = operand_pairs(max_operand)
    random.Random(seed).shuffle(pairs)
    held = max(1, int(len(pairs) * valid_fraction))
    return pairs[held:], pairs[:held]


def write_rl_example_data(
    directory: str, seed: int = 1234, train_prompts: int = 512, sft_examples: int = 400, max_operand: int = 9,
    valid_fraction: float = 0.2,
) -> RLExampleData:
    """Writes rl_prompts_train.jsonl, rl_prompts_valid.jsonl and rl_sft_train.jsonl under `directory` and returns
    their paths: training prompts and SFT conversations from the training operand pairs, the held-out prompts
    one per held-out pair (split_pairs)."""
    train, valid = split_pairs(seed, max_operand, valid_fraction)
    paths = RLExampleData(*(os.path.join(directory, f"{name}.jsonl") for name in (
        "rl_prompts_train", "rl_prompts_valid", "rl_sft_train")))
    contents = (
        arithmetic_prompt_records(train_prompts, seed + 1, pairs=train),
        arithmetic_prompt_records(len(valid), seed + 2, pairs=valid),
        arithmetic_sft_conversations(sft_examples, seed + 3, pairs=train),
    )
    for path, records in zip(vars(paths).values(), contents):
        with atomic_output(path) as handle:
            handle.writelines(json.dumps(record) + "\n" for record in records)
    return paths
