"""Small post-training data made for this repository: instruction conversations and right-vs-wrong preferences.

Deterministic in its seed, generated locally (nothing downloaded), split so the validation questions are unseen
in training. It writes TRL-format JSONL for the quickstart's SFT -> DPO chain and the learning tests; it must not
tokenize or train.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Set, Tuple

from megatron_sota.atomic_files import atomic_output

WORDS = (
    "apple river stone cloud green table window music light paper orange garden silver road winter "
    "bread candle forest yellow bridge market ocean pencil summer tiger violin wheel basket mirror planet"
).split()

SYSTEM = "You are a careful assistant. Answer briefly."


@dataclass(frozen=True)
class Item:
    """One instruction: its question, the right answer and plausible wrong ones (each differs from `answer`)."""

    question: str
    answer: str
    wrongs: Tuple[str, ...]


def _item(question: str, answer: str, *wrongs: str) -> Item:
    """An Item keeping the wrong answers that really are wrong, once each (a variant may happen to be right)."""
    kept = tuple(dict.fromkeys(w for w in wrongs if w != answer))
    if not kept:
        raise ValueError(f"{question!r}: no wrong answer differs from {answer!r}")
    return Item(question, answer, kept)


def _words(rng: random.Random, low: int = 2, high: int = 5) -> List[str]:
    return rng.sample(WORDS, rng.randint(low, high))


# Each task draws its question from `rng` alone; its wrong answers take no draws, so that the conversations
# are the same whether or not preferences are made from the same generator.
def _reverse(rng):
    words = _words(rng)
    right = list(reversed(words))
    swapped = [right[1], right[0], *right[2:]]  # reversed but for the first two words
    return _item(
        f"Reverse the order of these words: {' '.join(words)}", " ".join(right), " ".join(words), " ".join(swapped)
    )


def _upper(rng):
    words = _words(rng)
    text = " ".join(words)
    return _item(f"Write in capital letters: {text}", text.upper(), text, " ".join(w.capitalize() for w in words))


def _numbers(values) -> str:
    return " ".join(map(str, values))


def _sort(rng):
    numbers = rng.sample(range(100), rng.randint(3, 6))
    return _item(f"Sort from smallest to largest: {_numbers(numbers)}", _numbers(sorted(numbers)), _numbers(numbers),
                 _numbers(sorted(numbers, reverse=True)))


def _count(rng):
    words = _words(rng, 1, 6)
    n = len(words)
    return _item(f"How many words are in: {' '.join(words)}", f"There are {n} words.",
                 *(f"There are {k} words." for k in (n - 1, n + 1) if k >= 1))


def _add(rng):
    a, b = rng.randint(0, 50), rng.randint(0, 50)
    return _add_item(a, b)


def _add_item(a: int, b: int) -> Item:
    """The right sum against the sums off by 1 to 9."""
    return _item(f"What is {a} + {b}?", f"{a} + {b} = {a + b}.",
                 *(f"{a} + {b} = {a + b + d}." for d in range(-9, 10) if d and a + b + d >= 0))


def _first_letters(rng):
    words = _words(rng)
    first = [w[0] for w in words]
    return _item(f"Give the first letter of each word: {' '.join(words)}", " ".join(first),
                 " ".join(w[-1] for w in words), " ".join(w[1] for w in words), " ".join(reversed(first)))


TASKS: Dict[str, Callable[[random.Random], Item]] = {
    "reverse": _reverse, "upper": _upper, "sort": _sort, "count": _count, "add": _add,
    "first_letters": _first_letters,
}
"""The instruction tasks by name (the `task` of a preference record)."""


def instruction_conversations(count: int, seed: int) -> List[dict]:
    """`count` records {"messages": [...]}: one to three user/assistant turns, a system message in a third of them."""
    rng = random.Random(seed)
    makers = tuple(TASKS.values())
    records = []
    for _ in range(count):
        messages = [{"role": "system", "content": SYSTEM}] if rng.random() < 1 / 3 else []
        for _turn in range(rng.choice((1, 1, 2, 3))):
            item = rng.choice(makers)(rng)
            messages += [{"role": "user", "content": item.question}, {"role": "assistant", "content": item.answer}]
        records.append({"messages": messages})
    return records


def preference_items(per_task: int, seed: int, max_operand: int = 30) -> Dict[str, List[Item]]:
    """Up to `per_task` distinct questions of each task, in a seeded order: additions a + b with
    0 <= a, b <= max_operand, the other tasks drawn from their generators."""
    rng = random.Random(seed)
    additions = [_add_item(a, b) for a in range(max_operand + 1) for b in range(max_operand + 1)]
    rng.shuffle(additions)
    items = {"add": additions[:per_task]}
    for name, make in TASKS.items():
        if name == "add":
            continue
        seen: Dict[str, Item] = {}
        for _attempt in range(20 * per_task):  # the generators repeat themselves rarely; stop if they run dry
            item = make(rng)
            seen.setdefault(item.question, item)
            if len(seen) == per_task:
                break
        items[name] = list(seen.values())
    return items


def preference_records(items: Dict[str, List[Item]], seed: int) -> List[dict]:
    """{"prompt", "chosen", "rejected", "task"} (conversational), the tasks interleaved: each right answer
    against one of its wrong answers drawn with `seed`. `task` names the TASKS entry (readers ignore the key)."""
    rng = random.Random(seed)
    records = []
    for at in range(max(map(len, items.values()), default=0)):
        for task, task_items in items.items():
            if at < len(task_items):
                item = task_items[at]
                records.append({
                    "prompt": [{"role": "user", "content": item.question}],
                    "chosen": [{"role": "assistant", "content": item.answer}],
                    "rejected": [{"role": "assistant", "content": rng.choice(item.wrongs)}],
                    "task": task,
                })
    return records


def split_items(items: Dict[str, List[Item]], valid_fraction: float, trained: Set[str]):
    """(train, valid) items of each task, split by question: valid holds valid_fraction of the task's questions,
    the first ones in its order that are not in `trained` (questions trained on elsewhere, e.g. in the SFT
    conversations); train holds the others."""
    train, valid = {}, {}
    for task, task_items in items.items():
        held = int(len(task_items) * valid_fraction)
        valid[task] = [item for item in task_items if item.question not in trained][:held]
        kept = {item.question for item in valid[task]}
        train[task] = [item for item in task_items if item.question not in kept]
    return train, valid


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
    max_operand: int = 30, preferences_per_task: int = 200,
) -> ExampleData:
    """Writes sft_{train,valid}.jsonl and preference_{train,valid}.jsonl under `out_dir`; returns their paths.

    Preferences: `preferences_per_task` questions of each task (additions a + b with 0 <= a, b <= max_operand),
    split by question: no validation question is in the preference training pairs or the SFT training
    conversations.
    """
    conversations = instruction_conversations(sft_examples + sft_valid, seed)
    trained = {m["content"] for c in conversations[:sft_examples] for m in c["messages"] if m["role"] == "user"}
    train, valid = split_items(preference_items(preferences_per_task, seed + 1, max_operand), valid_fraction, trained)
    paths = ExampleData(*(os.path.join(out_dir, f"{name}.jsonl") for name in (
        "sft_train", "sft_valid", "preference_train", "preference_valid")))
    _write_jsonl(paths.sft_train, conversations[:sft_examples])
    _write_jsonl(paths.sft_valid, conversations[sft_examples:])
    _write_jsonl(paths.preference_train, preference_records(train, seed + 2))
    _write_jsonl(paths.preference_valid, preference_records(valid, seed + 3))
    return paths


def counts(data: ExampleData) -> Dict[str, int]:
    """Records per file (for logs and the README)."""
    result = {}
    for name, path in vars(data).items():
        with open(path, encoding="utf-8") as handle:
            result[name] = sum(1 for _ in handle)
    return result
