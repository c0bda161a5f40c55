"""The messages tools/cai.py puts to a model: response, critique and revision turns, and the judge's two-option question.

Text only (lists of {"role", "content"} messages and strings); it must not tokenize, generate or score.
"""

from __future__ import annotations

from typing import List

from megatron_sota.posttrain.cai.constitution import Principle

ANSWER_PREFIX = "The answer is:"
"""The judge's reply starts with this; the labeller compares the log-probabilities of " (A)" and " (B)" after it."""
OPTIONS = (" (A)", " (B)")


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def critique_turns(prompt: str, response: str, principle: Principle) -> List[dict]:
    """The conversation the model continues with a critique of its own response."""
    return [user(prompt), assistant(response), user(principle.critique_request)]


def revision_turns(prompt: str, response: str, principle: Principle, critique: str) -> List[dict]:
    """The conversation the model continues with a rewrite of its response, after its critique."""
    return [*critique_turns(prompt, response, principle), assistant(critique), user(principle.revision_request)]


def judge_question(prompt: str, question: str, first: str, second: str) -> str:
    """The judge's user message: the conversation, the principle's question, and the two responses as (A) and (B)."""
    return (
        "Consider this conversation between a person and an AI assistant.\n\n"
        f"Person: {prompt}\n\n"
        f"{question}\n"
        f"Options:\n(A) {first}\n(B) {second}"
    )


def judge_example(prompt: str, question: str, first: str, second: str, better: str) -> dict:
    """An SFT record (post-training I's `messages` format) teaching a judge that option `better` ("A" or "B") wins:
    the data to fine-tune a judge on the format the labeller reads."""
    if better not in ("A", "B"):
        raise ValueError(f"better: expected 'A' or 'B', found {better!r}")
    reply = ANSWER_PREFIX + OPTIONS[better == "B"]
    return {"messages": [user(judge_question(prompt, question, first, second)), assistant(reply)]}
