"""Final-integer extraction for exact-match tasks (AIME/GSM8K style answers)."""

from __future__ import annotations

import pytest

from megatron_sota.evaluation.answer_extraction import (
    exact_match,
    extract_final_integer,
    normalize_gold,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        # \boxed{} wins over later numbers, the last box over earlier ones
        (r"so the total is \boxed{17}. Checking: 3 + 4 = 7", 17),
        (r"first \boxed{3}, corrected: \boxed{5}", 5),
        (r"\boxed{042}", 42),
        (r"\boxed{1,234}", 1234),
        (r"\boxed{-7}", -7),
        (r"$\boxed{\text{12}}$", 12),
        (r"\boxed{x = 9}", 9),
        (r"\boxed{30^\circ}", 30),
        (r"\boxed{1{,}000}", 1000),
        (r"\boxed{\frac{1}{2}} ... and 6 apples", 6),  # a box without an integer: the last integer of the text
        (r"\boxed{12", 12),  # cut off by the generation budget: not a box, but 12 is the last integer
        (r"\boxed 8", 8),
        # decoration is removed from the box, so the box still wins over later numbers
        (r"\boxed{x = 9} after 3 steps", 9),
        (r"\boxed{30^\circ}, not 60", 30),
        (r"\boxed{\textbf{12}} (from 3 + 9)", 12),
        (r"\boxed 8 since 2 * 4", 8),
        # the last integer of the text
        ("There are 3 cats and 5 dogs, so 8 animals", 8),
        ("The answer is 42.", 42),
        ("the answer is 042", 42),
        ("answer: 1,234", 1234),
        ("total 1,234,567 items", 1234567),
        ("(3,4)", 4),
        ("the answer is -5", -5),
        ("x=-12", -12),
        ("2-3", 3),
        ("it is \u22124", -4),
        ("+6", 6),
        ("$1,000!", 1000),
        ("3.0", 3),
        ("3.000 apples", 3),
        ("3.5", None),
        ("7 apples weigh 3.5 kg", 7),  # non-integers are skipped
        ("version v1.2", None),
        ("x2", None),
        ("no digits here", None),
        ("", None),
        ("#### 72", 72),
    ],
)
def test_extract_final_integer(text, expected):
    assert extract_final_integer(text) == expected


def test_normalize_gold_goes_through_the_same_extraction():
    assert normalize_gold("042") == 42
    assert normalize_gold(" 1,234 ") == 1234
    assert normalize_gold("#### -3") == -3
    assert normalize_gold(5) == 5
    assert normalize_gold("x + 1") == 1
    assert normalize_gold("no answer") is None


def test_exact_match():
    assert exact_match(r"... therefore \boxed{42}.", "042")
    assert exact_match("The answer is 1,234.", 1234)
    assert not exact_match("The answer is 41.", "42")
    assert not exact_match("I don't know", "42")
    assert not exact_match(r"\boxed{42} hmm, 41", "41")  # the box decides
    # a gold answer that is not an integer: compare the final answer's text
    assert exact_match(r"so \boxed{Paris}", "paris")
    assert exact_match("  Paris. ", "Paris")
    assert not exact_match("Lyon", "Paris")
