"""Small post-training data made for this repository: instruction conversations and arithmetic preferences.

Deterministic in its seed, generated locally (nothing downloaded), split so the validation questions are unseen
in training. It writes TRL-format JSONL for the quickstart's SFT -> DPO chain and the learning tests; it must not
tokenize or train.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

from megatron_sota.atomic_files import atomic_output

WORDS = (
    "apple river stone cloud green table window music light paper orange garden silver road winter "
    "bread candle forest yellow bridge market ocean pencil summer tiger violin wheel basket mirror planet"
).split()

SYSTEM = "You are a careful assistant. Answer briefly."


def _words(rng: random.Random, low: int = 2, high: int = 5) -> List[str]:
    return rng.sample(WORDS, rng.randint(low, high))


def _reverse(rng):
    words = _words(rng)
    return f"Reverse the order of these words: {' '.join(words)}", " ".join(reversed(words))


def _upper(rng):
    words = _words(rng)
    return f"Write in capital letters: {' '.join(words)}", " ".join(words).upper()


def _sort(rng):
    numbers = rng.sample(range(100), rng.randint(3, 6))
    return f"Sort from smallest to largest: {' '.join(map(str, numbers))}", " ".join(map(str, sorted(numbers)))


def _count(rng):
    words = _words(rng, 1, 6)
    return f"How many words are in: {' '.join(words)}", f"There are {len(words)} words."


def _add(rng):
    a, b = rng.randint(0, 50), rng.randint(0, 50)
    return f"What is {a} + {b}?", f"{a} + {b} = {a + b}."


def _first_letters(rng):
    words = _words(rng)
    return f"Give the first letter of each word: {' '.join(words)}", " ".join(w[0] for w in words)


TASKS: Tuple[Callable[[random.Random], Tuple[str, str]], ...] = (_reverse, _upper, _sort, _count, _add, _first_letters)


def instruction_conversations(count: int, seed: int) -> List[dict]:
    """`count` records {"messages": [...]}: one to three user/assistant turns, a system message in a third of them."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        messages = [{"role": "system", "content": SYSTEM}] if rng.random() < 1 / 3 else []
        for _turn in range(rng.choice((1, 1, 2, 3))):
            question, answer = rng.choice(TASKS)(rng)
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        records.append({"messages": messages})
    return records


def arithmetic_preferences(questions: List[Tuple[int, int]], seed: int) -> List[dict]:
    """{"prompt", "chosen", "rejected"} (conversational): the right sum against a wrong one, off by 1 to 9."""
    rng = random.Random(seed)
    records = []
    for a, b in questions:
        wrong = a + b + rng.choice([d for d in range(-9, 10) if d and a + b + d >= 0])
        records.append({
            "prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
            "chosen": [{"role": "assistant", "content": f"{a} + {b} = {a + b}."}],
            "rejected": [{"role": "assistant", "content": f"{a} + {b} = {wrong}."}],
        })
    return records


@dataclass(frozen=True)
class ExampleData:
    sft_train: str
    sft_valid: str
    preference_train: str
    preference_valid: str


def _write_jsonl(path: str, records: List[dict]) -> None:
    with atomic_output(path) as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def write_example_data(
    out_dir: str, seed: int = 1234, sft_examples: int = 2000, sft_valid: int = 200, valid_fraction: float = 0.2,
    max_operand: int = 30,
) -> ExampleData:
    """Writes sft_{train,valid}.jsonl and preference_{train,valid}.jsonl under `out_dir`; returns their paths.

    Preference questions a + b (0 <= a, b <= max_operand) are split by question: no validation sum is trained on.
    """
    conversations = instruction_conversations(sft_examples + sft_valid, seed)
    questions = [(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
    random.Random(seed + 1).shuffle(questions)
    held_out = int(len(questions) * valid_fraction)
    paths = ExampleData(*(os.path.join(out_dir, f"{name}.jsonl") for name in (
        "sft_train", "sft_valid", "preference_train", "preference_valid")))
    _write_jsonl(paths.sft_train, conversations[:sft_examples])
    _write_jsonl(paths.sft_valid, conversations[sft_examples:])
    _write_jsonl(paths.preference_train, arithmetic_preferences(questions[held_out:], seed + 2))
    _write_jsonl(paths.preference_valid, arithmetic_preferences(questions[:held_out], seed + 3))
    return paths


def counts(data: ExampleData) -> Dict[str, int]:
    """Records per file (for logs and the README)."""
    result = {}
    for name, path in vars(data).items():
        with open(path, encoding="utf-8") as handle:
            result[name] = sum(1 for _ in handle)
    return result
