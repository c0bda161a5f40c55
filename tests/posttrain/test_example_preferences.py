"""The repository's preference data: right against plausibly wrong answers for every instruction task, each pair's
task recorded (and accepted by the record reader), the validation questions unseen in any training file; and the
per-task accuracy tables of tools/preference_accuracy.py (DPO and reward models)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from megatron_sota.posttrain.example_data import TASKS, write_example_data
from megatron_sota.cli.preference_accuracy import main
from megatron_sota.posttrain.preference_accuracy import ALL, accuracy_table, pair_table, record_tasks, table_text
from megatron_sota.posttrain.records import read_preference_records


def _lines(path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def test_preferences_cover_every_task_with_wrong_rejections_and_unseen_validation_questions(tmp_path):
    data = write_example_data(str(tmp_path), sft_valid=10, preferences_per_task=50)  # 2000 SFT conversations
    train, valid = _lines(data.preference_train), _lines(data.preference_valid)
    assert Counter(r["task"] for r in valid) == {task: 10 for task in TASKS}
    assert Counter(r["task"] for r in train) == {task: 40 for task in TASKS}
    assert all(r["chosen"][0]["content"] != r["rejected"][0]["content"] for r in train + valid)
    question = lambda record: record["prompt"][0]["content"]  # noqa: E731
    sft_questions = {m["content"] for r in _lines(data.sft_train) for m in r["messages"] if m["role"] == "user"}
    held_out = {question(r) for r in valid}
    assert len(held_out) == len(valid)
    assert not held_out & {question(r) for r in train} and not held_out & sft_questions
    # The record reader keeps its checks and ignores the extra `task` key; the tool reads it back in order.
    assert len(read_preference_records([data.preference_valid])) == len(valid)
    assert record_tasks([data.preference_valid]) == [r["task"] for r in valid]


def test_accuracy_table_counts_pairs_whose_implicit_reward_prefers_the_chosen_answer():
    reference = torch.tensor([[-5.0, -4.0], [-3.0, -6.0], [-2.0, -2.0], [-1.0, -1.0]], dtype=torch.float64)
    policy = reference + torch.tensor([[1.0, -1.0], [-2.0, 0.0], [0.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    table = accuracy_table(policy, reference, ["a", "a", "b", "b"], beta=0.5)
    # Pair margins beta * (policy - reference) of chosen minus rejected: a: 1.0 and -1.0, b: 0 (a tie) and 0.25.
    assert table["a"] == {"pairs": 2, "accuracy": 0.5, "margin": pytest.approx(0.0), "reference_accuracy": 0.5}
    assert table["b"]["accuracy"] == 0.5 and table["b"]["margin"] == pytest.approx(0.125)  # a tie is not right
    assert table["b"]["reference_accuracy"] == 0.0
    assert table[ALL]["pairs"] == 4 and table[ALL]["accuracy"] == 0.5


def test_a_reward_models_table_compares_its_scores_and_the_command_takes_one_kind_of_model(capsys):
    scores = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-1.0, 3.0]], dtype=torch.float64)
    table = pair_table(scores, ["a", "a", "b"])
    assert table["a"] == {"pairs": 2, "accuracy": 0.5, "margin": pytest.approx(1.5)}  # the tie is not right
    assert table["b"]["accuracy"] == 0.0 and table[ALL]["accuracy"] == pytest.approx(1 / 3)
    assert table_text(table).splitlines()[0].split() == ["task", "pairs", "accuracy", "margin"]
    for wrong in (["--reward", "rm", "--policy", "p"], ["--policy", "p"], []):
        with pytest.raises(SystemExit):
            main([*wrong, "--files", "valid.jsonl"])
    assert "give either --reward, or both --policy and --reference" in capsys.readouterr().err
