"""How evaluation turns texts into scored requests: rolling perplexity windows and the context/continuation split."""

from __future__ import annotations

import pytest

from megatron_sota.evaluation.runner import encode_pair, rolling_windows


@pytest.mark.parametrize("length", [1, 7, 8, 9, 30, 64])
def test_rolling_windows_score_every_token_once_with_at_least_half_a_window_of_context(length):
    max_length, prefix = 8, -1
    tokens = list(range(length))
    scored = []
    for context, continuation in rolling_windows(tokens, prefix, max_length):
        assert 1 <= len(context) and len(context) + len(continuation) <= max_length + 1
        if scored:  # later windows: the tokens just before, at least half a window of them
            assert len(context) >= max_length // 2 and context[-1] == scored[-1]
        else:
            assert context == [prefix]
        scored.extend(continuation)
    assert scored == tokens


class _CharTokenizer:
    """One token per character, except that " x" (space then x) is one token."""

    eod = 0

    def tokenize(self, text: str) -> list:
        ids, i = [], 0
        while i < len(text):
            if text[i : i + 2] == " x":
                ids.append(1000)
                i += 2
            else:
                ids.append(ord(text[i]))
                i += 1
        return ids


def test_encode_pair_moves_the_context_trailing_space_into_the_continuation():
    context, continuation = encode_pair(_CharTokenizer(), "Answer: ", "x")
    assert context == [ord(c) for c in "Answer:"] and continuation == [1000]


def test_encode_pair_of_an_empty_context_conditions_on_end_of_document():
    assert encode_pair(_CharTokenizer(), "", "ab") == ([0], [ord("a"), ord("b")])
