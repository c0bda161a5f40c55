"""The benchmark tasks through the runner, on models whose answers the test chooses: MMLU's per-subject and
macro/micro accuracy, 5-shot examples of the item's own subject, GPQA letters, AIME pass@k against the closed form,
chat-formatted prompts and their end-of-turn stop, and the checks of the new task keys."""

from __future__ import annotations

import json
import math
import os

import pytest

from megatron_sota.config.files import conf_dir
from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation.prompting import multiple_choice_context
from megatron_sota.evaluation.runner import ChatFormat, evaluate, sample_seed
from megatron_sota.evaluation.task_data import read_task_items
from megatron_sota.evaluation.task_spec import load_task
from tests.evaluation.fake_models import scripted_model, single_replica

DATA = conf_dir("eval", "tasks", "data")


def _records(name: str) -> list:
    with open(os.path.join(DATA, name), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _rows(rows) -> dict:
    return {row.metric: row for row in rows}


def test_mmlu_reports_micro_macro_and_per_subject_accuracy(monkeypatch):
    """Right on every astronomy question, wrong on every chemistry one; 10 records = 6 astronomy + 4 chemistry,
    so the micro average (6/10) and the macro one ((1 + 0) / 2) differ."""
    single_replica(monkeypatch)
    records = _records("mmlu_sample.jsonl")
    gold = {r["question"]: (r["subject"], r["answer"] if isinstance(r["answer"], str) else "ABCD"[r["answer"]]) for r in records}

    def bonus(context: str, letter: str) -> float:
        question = context.rsplit("\n\n", 1)[-1].split("\nA. ", 1)[0]
        subject, right = gold[question]
        chosen = right if subject == "astronomy" else "ABCD"[("ABCD".index(right) + 1) % 4]
        return 3.0 if letter == chosen else 0.0

    rows = _rows(evaluate(load_task("mmlu_sample"), scripted_model(lambda p, s: "", bonus), limit=10))
    assert [s for s, _ in list(gold.values())[:10]] == ["astronomy"] * 6 + ["high_school_chemistry"] * 4
    assert rows["acc"].value == pytest.approx(0.6) and rows["acc"].n == 10
    assert rows["acc_macro"].value == pytest.approx(0.5)
    assert (rows["acc/astronomy"].value, rows["acc/astronomy"].n) == (1.0, 6)
    assert (rows["acc/high_school_chemistry"].value, rows["acc/high_school_chemistry"].n) == (0.0, 4)
    # macro stderr: each subject's stderr is 0 (all right or all wrong)
    assert rows["acc_macro"].stderr == 0.0
    assert rows["acc_norm"].value == rows["acc_bytes"].value == pytest.approx(0.6)  # one-letter choices: same ranking


def test_mmlu_five_shot_examples_come_from_the_items_own_subject():
    spec = load_task("mmlu_sample_5shot")
    items = read_task_items(spec)
    subject_of = {r["question"]: r["subject"] for r in _records("mmlu_sample.jsonl")}
    for index, item in enumerate(items):
        context = multiple_choice_context(spec, items, index)
        blocks = context.split("\n\n")[1:]  # the preamble, then 5 solved examples and the question
        questions = [block.split("\nA. ", 1)[0] for block in blocks]
        assert len(questions) == 6 and questions[-1] == item.question
        assert {subject_of[q] for q in questions} == {item.fields["subject"]}
        assert questions.count(item.question) == 1
        assert context.startswith(f"The following are multiple choice questions (with answers) about {item.fields['subject'].replace('_', ' ')}.")


def test_gpqa_letter_answers_are_scored_by_the_letter_they_name(monkeypatch):
    """The model finds the correct answer's text among the shuffled (A)..(D) lines and names its letter on even
    records, a wrong letter on odd ones; its reasoning mentions other letters first."""
    single_replica(monkeypatch)
    correct = {r["Question"]: r["Correct Answer"].strip() for r in _records("gpqa_sample.jsonl")}
    order = list(correct)

    def answer(prompt: str, seed) -> str:
        question = prompt.split("question: ", 1)[1].split("\n\nChoices:", 1)[0]
        lines = [line for line in prompt.splitlines() if line[:1] == "(" and line[2:4] == ") "]
        right = next(line[1] for line in lines if line[4:] == correct[question])
        letter = right if order.index(question) % 2 == 0 else "ABCD"[("ABCD".index(right) + 1) % 4]
        return f"(A) and (B) look close. The answer is ({letter})."

    rows = _rows(evaluate(load_task("gpqa_sample_cot"), scripted_model(answer)))
    assert rows["exact_match"].value == pytest.approx(sum(1 for i in range(len(order)) if i % 2 == 0) / len(order))


def _aime_task(tmp_path, extra: str) -> str:
    path = tmp_path / "aime.yaml"
    path.write_text(
        f"type: exact_match\nformat: aime\nfile: {os.path.join(DATA, 'aime_sample.jsonl')}\n"
        "template: \"Problem: {question}\\nSolution:\"\nmax_new_tokens: 64\nstop: []\n" + extra
    )
    return str(path)


def test_aime_pass_at_k_equals_the_unbiased_estimators_closed_form(tmp_path, monkeypatch):
    """n = 5 samples a problem; a sample is right when its seed is divisible by 3 (a deterministic coin), so each
    problem's c is known and pass@k must be the mean of 1 - C(n - c, k) / C(n, k)."""
    single_replica(monkeypatch)
    spec = load_task(_aime_task(tmp_path, "num_samples: 5\npass_at: [1, 2, 5]\ntemperature: 0.7\nseed: 11\n"))
    gold = [str(r["answer"]).lstrip("0") or "0" for r in _records("aime_sample.jsonl")]
    problems = [r["problem"] for r in _records("aime_sample.jsonl")]

    def answer(prompt: str, seed) -> str:
        index = next(i for i, p in enumerate(problems) if p in prompt)
        right = seed % 3 == 0
        return f"so the answer is \\boxed{{{gold[index] if right else int(gold[index]) + 1}}}"

    rows = _rows(evaluate(spec, scripted_model(answer)))
    n = 5
    correct = [sum(sample_seed(11, i, j) % 3 == 0 for j in range(n)) for i in range(len(problems))]
    assert 0 < sum(correct) < n * len(problems)  # some right, some wrong: the estimator is exercised
    for k in (1, 2, 5):
        expected = sum(1 - math.comb(n - c, k) / math.comb(n, k) for c in correct) / len(correct)
        assert rows[f"pass@{k}"].value == pytest.approx(expected)
    assert rows["exact_match"].value == pytest.approx(sum(correct) / (n * len(problems)))


def test_sampling_settings_are_checked_and_need_a_model_that_samples(tmp_path, monkeypatch):
    single_replica(monkeypatch)
    with pytest.raises(MegatronSotaError) as info:
        load_task(_aime_task(tmp_path, "num_samples: 4\npass_at: [1, 8]\n"))
    message = str(info.value)
    assert "key 'pass_at': expected distinct values from 1 to num_samples (4), found [1, 8]" in message
    assert "key 'temperature': 4 samples of greedy decoding are one answer repeated" in message  # both at once
    spec = load_task(_aime_task(tmp_path, "num_samples: 2\ntemperature: 0.5\n"))
    greedy_only = scripted_model(lambda p, s: "1")
    greedy_only.generate_sampled = None  # the model being trained decodes greedily only
    with pytest.raises(MegatronSotaError, match="temperature 0.5 samples answers, which this model cannot do"):
        evaluate(spec, greedy_only)


def test_formats_and_keys_are_checked_against_the_task_type(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"type: multiple_choice\nformat: aime\nfile: {os.path.join(DATA, 'aime_sample.jsonl')}\nnum_samples: 3\n"
        "chat: true\n"
    )
    with pytest.raises(MegatronSotaError) as info:
        load_task(str(bad))
    message = str(info.value)
    assert f"{bad}:2: key 'format': aime records make exact_match tasks: expected one of those types, found type multiple_choice" in message
    assert f"{bad}:4: key 'num_samples': only exact_match, code tasks read it" in message
    assert f"{bad}:5: key 'chat': chat formats tasks whose answers are generated" in message
    typo = tmp_path / "typo.yaml"
    typo.write_text(f"type: multiple_choice\nformat: mmlu_\nfile: {os.path.join(DATA, 'mmlu_sample.jsonl')}\n")
    with pytest.raises(MegatronSotaError, match="did you mean 'mmlu'"):
        load_task(str(typo))


def test_no_gpqa_template_can_show_which_answer_is_correct(tmp_path):
    from megatron_sota.evaluation.runner import check_task_data

    leak = tmp_path / "leak.yaml"
    leak.write_text(f"type: multiple_choice\nformat: gpqa\nfile: {os.path.join(DATA, 'gpqa_sample.jsonl')}\ntemplate: \"{{question}} {{Correct Answer}}\"\n")
    with pytest.raises(MegatronSotaError, match="names field 'Correct Answer': expected the record to have it"):
        check_task_data(load_task(str(leak)))


def test_chat_formatted_prompts_put_examples_in_turns_and_stop_at_the_end_of_turn(tmp_path, monkeypatch):
    single_replica(monkeypatch)
    data = tmp_path / "em.jsonl"
    data.write_text("".join(json.dumps({"question": f"{a} + {a}?", "answer": 2 * a}) + "\n" for a in range(1, 5)))
    task = tmp_path / "em.yaml"
    task.write_text(f"type: exact_match\nfile: {data}\nnum_fewshot: 2\nchat: true\npreamble: \"Add.\"\nstop: []\n")

    def render(messages) -> str:
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"

    seen = []

    def answer(prompt: str, seed) -> str:
        seen.append(prompt)
        question = prompt.rsplit("<user>Question: ", 1)[1].split("?", 1)[0]
        return f" {eval(question)}</assistant><user>and 7"  # the text after the end of the turn must not count

    rows = _rows(evaluate(load_task(str(task)), scripted_model(answer, chat=ChatFormat(render, ("</assistant>",)))))
    assert rows["exact_match"].value == 1.0
    first = seen[0]
    assert first.startswith("<system>Add.</system><user>Question: ") and first.endswith("?\nAnswer:</user><assistant>")
    assert first.count("<user>") == 3 and first.count("<assistant>") == 3  # two solved examples, then the question
    assert "</user><assistant>" in first and "</assistant><user>" in first


PROBLEMS = [
    {"task_id": "T/0", "prompt": "def add(a, b):\n    \"\"\"a + b\"\"\"\n", "entry_point": "add",
     "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"},
    {"task_id": "T/1", "prompt": "def double(xs):\n    \"\"\"Each element twice.\"\"\"\n", "entry_point": "double",
     "test": "def check(candidate):\n    assert candidate([1, 2]) == [2, 4]\n    assert candidate([]) == []\n"},
]
RIGHT = {"add": "    return a + b\n", "double": "    return [2 * x for x in xs]\n"}
WRONG = {"add": "    return a - b\n", "double": "    return xs + xs\n"}


def _code_task(tmp_path, extra: str = "") -> str:
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    task = tmp_path / "code.yaml"
    task.write_text(f"type: code\nfile: {data}\nmax_new_tokens: 200\n" + extra)
    return str(task)


def test_code_pass_at_k_runs_each_completion_against_its_tests_in_the_sandbox(tmp_path, monkeypatch):
    """add is always solved; double only by samples whose seed is even. Each completion runs on into another
    top-level def that would break the program if it were not cut off."""
    single_replica(monkeypatch)

    def answer(prompt: str, seed) -> str:
        name = "add" if prompt.startswith("def add") else "double"
        body = RIGHT[name] if name == "add" or seed % 2 == 0 else WRONG[name]
        return body + "\ndef broken(:\n"

    spec = load_task(_code_task(tmp_path, "num_samples: 3\npass_at: [1, 2]\ntemperature: 0.8\n"))
    rows = _rows(evaluate(spec, scripted_model(answer)))
    right = [3, sum(sample_seed(spec.seed, 1, j) % 2 == 0 for j in range(3))]
    assert 0 < right[1] < 3
    for k in (1, 2):
        expected = sum(1 - math.comb(3 - c, k) / math.comb(3, k) for c in right) / 2
        assert rows[f"pass@{k}"].value == pytest.approx(expected)
    assert set(rows) == {"pass@1", "pass@2"}


def test_chat_formatted_code_answers_are_read_from_their_code_block(tmp_path, monkeypatch):
    single_replica(monkeypatch)

    def answer(prompt: str, seed) -> str:
        name = "add" if "def add" in prompt else "double"
        assert prompt.startswith("<user>Complete the following Python function.") and prompt.endswith("<assistant>")
        solution = {"add": "def add(a, b):\n    return a + b\n", "double": "def double(xs):\n    return xs\n"}[name]
        return f"Here it is:\n```python\n{solution}```\nThis adds them."

    chat = ChatFormat(lambda messages: f"<user>{messages[-1]['content']}</user><assistant>")
    rows = _rows(evaluate(load_task(_code_task(tmp_path, "chat: true\n")), scripted_model(answer, chat=chat)))
    assert rows["pass@1"].value == 0.5  # add is right, double returns its input
