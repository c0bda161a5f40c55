"""Output checks: PII redacted with the curation redaction, toxic output refused, stop strings and length enforced."""

import pytest

from megatron_sota.serving.gateway.output_checks import OutputChecker, check_response
from tests.serving.fake_upstream import PII_TEXT, TOXIC_TEXT


@pytest.fixture(scope="module")
def checker():
    return OutputChecker(max_chars=40)


def test_pii_is_redacted_in_completions_and_chat(checker):
    completion = {"choices": [{"text": PII_TEXT, "finish_reason": "stop"}]}
    chat = {"choices": [{"message": {"role": "assistant", "content": PII_TEXT}, "finish_reason": "stop"}]}
    assert check_response(checker, "completions", {}, completion) == {"pii_email": 1, "pii_phone": 1}
    assert check_response(checker, "chat_completions", {}, chat) == {"pii_email": 1, "pii_phone": 1}
    assert completion["choices"][0]["text"] == chat["choices"][0]["message"]["content"] == "Write to <EMAIL> or call <PHONE>."


def test_toxic_choice_is_refused_and_clean_one_kept(checker):
    response = {"choices": [{"text": TOXIC_TEXT, "finish_reason": "stop"}, {"text": "Sorted.", "finish_reason": "stop"}]}
    assert check_response(checker, "completions", {}, response) == {"toxic": 1}
    assert response["choices"] == [{"text": "", "finish_reason": "content_filter"}, {"text": "Sorted.", "finish_reason": "stop"}]


def test_technical_text_the_toxicity_model_scores_high_is_not_refused(checker):
    # 0.90 with alt-profanity-check 1.0.6: above the curation threshold, below the gateway's
    assert checker.check(["kill the process and collect garbage"])[0].refused is False


def test_leaked_stop_string_cuts_the_text_and_long_text_is_cut(checker):
    response = {"choices": [{"text": "one\nEND two"}, {"text": "x" * 50}], "usage": {"completion_tokens": 30}}
    counts = check_response(checker, "completions", {"stop": "END", "max_tokens": 10, "n": 2}, response)
    assert counts == {"stop_string_in_output": 1, "too_long": 1, "over_max_tokens": 1}
    assert [c["text"] for c in response["choices"]] == ["one\n", "x" * 40]
