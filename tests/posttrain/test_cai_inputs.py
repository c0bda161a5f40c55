"""tools/cai.py without a model: the shipped constitution and prompts, every problem of a bad constitution or prompt
file at once, the judge's A/B arithmetic on a fake scorer (both orders averaged), and prompts too long to fit."""

from __future__ import annotations

import math

import pytest
import torch

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.cai.constitution import Principle, load_constitution, shipped_constitution
from megatron_sota.posttrain.cai.inputs import Comparison, read_comparisons, read_prompts


def test_the_shipped_constitution_covers_harmlessness_helpfulness_and_honesty_and_the_prompts_load():
    from megatron_sota.cli.cai import _shipped_prompts

    principles = load_constitution(None)
    assert shipped_constitution().endswith("posttrain/cai/constitution.yaml")
    assert {p.area for p in principles} == {"harmlessness", "helpfulness", "honesty"}
    assert all(p.comparison_question.rstrip().endswith("?") for p in principles)
    assert len(read_prompts(_shipped_prompts())) >= 8


def test_an_empty_constitution_is_refused(tmp_path):
    for text in ("", "principles: []\n", "principles:\n"):
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(MegatronSotaError, match=f"constitution {path}: expected a non-empty list under 'principles'"):
            load_constitution(str(path))


def test_every_problem_of_a_constitution_is_listed_with_its_principle(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "principles:\n"
        "  - name: one\n    critique_request: c\n    revision_request: r\n"  # no comparison_question
        "  - name: two\n    critique_request: ''\n    revision_request: r\n    comparison_question: q\n    typo: x\n"
        "  - name: one\n    critique_request: c\n    revision_request: r\n    comparison_question: q\n"
        "  - just text\n"
    )
    with pytest.raises(MegatronSotaError) as caught:
        load_constitution(str(path))
    message = str(caught.value)
    assert "5 problem(s)" in message
    assert f"{path}:principle 1 (one): field 'comparison_question': expected a non-empty string, found nothing (missing)" in message
    assert f"{path}:principle 2 (two): field 'critique_request': expected a non-empty string, found ''" in message
    assert f"{path}:principle 2 (two): expected only fields" in message and "found also typo" in message
    assert f"{path}:principle 3: name 'one': expected a unique name, found it also at principle 1" in message
    assert f"{path}:principle 4: expected a mapping" in message


def test_every_problem_of_a_prompt_file_is_listed_with_its_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine", "response_a": "x", "response_b": "y"}\nnot json\n\n{"prompt": ""}\n[1]\n')
    with pytest.raises(MegatronSotaError) as caught:
        read_comparisons(str(path))
    message = str(caught.value)
    assert f"{path}:2: expected one JSON object per line" in message
    assert f"{path}:4: field 'prompt': expected a non-empty string, found ''" in message
    assert f"{path}:4: field 'response_a'" in message and f"{path}:4: field 'response_b'" in message
    assert f"{path}:5: expected a JSON object" in message and f"{path}:1" not in message
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(MegatronSotaError, match="found no records"):
        read_prompts(str(empty))


class _Chars:
    """A character-level tokenizer (every prefix of a text tokenizes to a prefix of its ids)."""

    eod = 0

    def tokenize(self, text):
        return [ord(c) for c in text]

    def detokenize(self, ids):
        return "".join(map(chr, ids))


class _Plain:
    """A chat template that renders the user's message as it is."""

    def render(self, messages, add_generation_prompt=False, where=""):
        return messages[-1]["content"]


def _fake_judge(bias: float, quality: dict):
    """Scores " (A)" as bias + quality of the response shown as (A), " (B)" as quality of (B); quality by
    (question, response)."""
    chars = _Chars()

    def score(requests):
        out = []
        for context, continuation in requests:
            text = chars.detokenize(context)
            question = next(q for q, _ in quality if q in text)
            shown_a = text.split("(A) ")[1].split("\n")[0]
            shown_b = text.split("(B) ")[1].split("The answer is:")[0]
            letter = chars.detokenize(continuation).strip()
            out.append(bias + quality[question, shown_a] if letter == "(A)" else quality[question, shown_b])
        return torch.tensor(out, dtype=torch.float64)[:, None]

    return score


def test_the_judge_averages_both_orders_and_every_drawn_principle():
    from megatron_sota.posttrain.cai.label import judge, preference_pairs

    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    principles = [Principle("safe", "c", "r", "Safer?"), Principle("clear", "c", "r", "Clearer?")]
    quality = {("Safer?", "good"): 1.0, ("Safer?", "bad"): 0.0, ("Clearer?", "good"): 0.5, ("Clearer?", "bad"): 1.0}
    comparison = Comparison("hello", "good", "bad", "t.jsonl:1")
    # A judge that adds 3 nats to "(A)" alone prefers whichever response is shown first: averaged over both
    # orders, "safe" gives (sigmoid(1 + 3) + sigmoid(1 - 3)) / 2 for response_a, "clear" the same with -0.5.
    [(p, names)] = judge([comparison], principles, 2, 0, _Chars(), _Plain(), 10_000, _fake_judge(3.0, quality))
    safe, clear = (sigmoid(4) + sigmoid(-2)) / 2, (sigmoid(2.5) + sigmoid(-3.5)) / 2
    assert sorted(names) == ["clear", "safe"] and p == pytest.approx((safe + clear) / 2, abs=1e-12)
    [(p_safe, _)] = judge([comparison], principles[:1], 1, 0, _Chars(), _Plain(), 10_000, _fake_judge(3.0, quality))
    assert p_safe == pytest.approx(safe, abs=1e-12) and p_safe > 0.5 > sigmoid(-2)  # one order alone would pick "bad"
    [pair] = preference_pairs([comparison], [(p_safe, ["safe"])], min_margin=0.0)
    assert (pair["chosen"], pair["rejected"], pair["cai_preference"]) == ("good", "bad", round(p_safe, 6))
    swapped = Comparison("hello", "bad", "good", "t.jsonl:2")
    [(p_swapped, _)] = judge([swapped], principles[:1], 1, 0, _Chars(), _Plain(), 10_000, _fake_judge(3.0, quality))
    assert p_swapped == pytest.approx(1 - p_safe, abs=1e-12)  # the verdict follows the response, not its letter
    assert preference_pairs([comparison], [(p_safe, ["safe"])], min_margin=2 * p_safe - 1 + 1e-9) == []
    assert preference_pairs([comparison], [(0.5, ["safe"])], min_margin=0.0) == []  # a tie is no preference


def test_prompts_too_long_for_the_context_are_all_listed_with_their_lines():
    from megatron_sota.posttrain.cai.label import judge
    from megatron_sota.posttrain.cai.respond import prompt_ids

    conversations = [[{"role": "user", "content": text}] for text in ("short", "x" * 30, "fits", "y" * 21)]
    wheres = [f"p.jsonl:{n}" for n in range(1, 5)]
    with pytest.raises(MegatronSotaError) as caught:
        prompt_ids(_Plain(), _Chars(), conversations, wheres, 20, "response")
    message = str(caught.value)
    assert "2 prompt(s) do not fit" in message and "p.jsonl:2: response: expected at most 20 tokens, found 30" in message
    assert "p.jsonl:4: response: expected at most 20 tokens, found 21" in message and "p.jsonl:3" not in message
    assert prompt_ids(_Plain(), _Chars(), conversations[:1], wheres[:1], 20, "response") == [[ord(c) for c in "short"]]
    long = Comparison("z" * 200, "a", "b", "c.jsonl:7")
    with pytest.raises(MegatronSotaError, match="c.jsonl:7: principle safe: expected the judge's prompt to fit in the judge's context"):
        judge([long], [Principle("safe", "c", "r", "Safer?")], 1, 0, _Chars(), _Plain(), 100, lambda r: None)
