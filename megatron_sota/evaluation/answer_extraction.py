r"""The final integer of a generated solution (AIME, GSM8K style), so "... is \boxed{042}." matches gold "42".

Rules of `extract_final_integer`, in order:
1. If the text has a `\boxed{...}` (or `\fbox{...}`, or `\boxed 42`), the content of the LAST one is
   used when it holds exactly one number after LaTeX decoration is removed (`\text{}`, `\mathrm{}`,
   `$`, `\$`, `\%`, `^\circ`, thin spaces `\,`, a leading `x =`, a trailing period, `{,}`) and
   that number is an integer.
2. Otherwise the LAST integer-valued number anywhere in the text (the box's content included).
   Non-integer numbers ("3.5") are skipped, so "3.5" alone gives None but "7 apples, 3.5 kg" gives 7.
Numbers: optional sign (+, -, or U+2212) when not glued to a preceding letter/digit ("2-3" is 2 and 3,
"is -3" is -3); digits with optional comma thousands separators in groups of three ("1,234,567";
"(3,4)" is 3 and 4); an optional decimal part, kept only when it is zero ("3.0" and "3.000" are 3).
A number glued to a preceding letter, digit, underscore or period ("x2", "v1.2") is not a number;
a trailing period is punctuation ("is 42." is 42); leading zeros are dropped ("042" is 42).
"""

from __future__ import annotations

import re
from decimal import Decimal

_NUMBER = re.compile(
    r"(?<![A-Za-z0-9_.])"                 # not glued to a word, a number or a version string
    r"(?P<sign>[-+\u2212](?=\d))?"
    r"(?P<digits>\d{1,3}(?:,\d{3})+(?!\d)|\d+)"
    r"(?P<fraction>\.\d+)?"
    r"(?!\d)"
)
_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE = re.compile(r"\\boxed[ \t]+([^\s${}]+)")
_LATEX_WRAPPERS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|displaystyle)\s*\{([^{}]*)\}")
_LATEX_SPACES = re.compile(r"\\[,;:! ]|\\(?:quad|qquad|displaystyle)\b")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")
_LEADING_VARIABLE = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?\s*=\s*")


def extract_final_integer(text: str) -> int | None:
    """The answer a solution ends with: the last boxed integer, else the last integer; None if none."""
    boxes = _boxed_contents(text)
    if boxes:
        value = _box_integer(boxes[-1])
        if value is not None:
            return value
    for match in reversed(list(_NUMBER.finditer(text))):
        value = _integer_value(match)
        if value is not None:
            return value
    return None


def normalize_gold(answer: str | int) -> int | None:
    """The gold answer through the same extraction ("042" -> 42, "#### 1,234" -> 1234); None if not an integer."""
    if isinstance(answer, int) and not isinstance(answer, bool):
        return answer
    return extract_final_integer(str(answer))


def exact_match(prediction_text: str, gold: str | int) -> bool:
    """Integer gold: the prediction's final integer equals it. Other gold (rare here): the final answer text
    (last box, else the whole prediction) equals the gold after trimming, whitespace folding and case folding.
    """
    gold_value = normalize_gold(gold)
    if gold_value is not None:
        return extract_final_integer(prediction_text) == gold_value
    boxes = _boxed_contents(prediction_text)
    return _fold(boxes[-1] if boxes else prediction_text) == _fold(str(gold))


_ANSWER_LETTER = re.compile(r"(?i:answer)\s*(?:is|:)?\s*[:\s]*\(?\*{0,2}([A-Z])\*{0,2}\)?(?![A-Za-z])")
_PARENTHESISED_LETTER = re.compile(r"\(([A-Z])\)")


def extract_choice_letter(text: str, num_choices: int) -> str | None:
    """The letter a chain-of-thought answer ends on: the last "answer is (B)" / "Answer: B", else the last "(B)",
    else a reply that is only a letter ("B", "B."); among the first `num_choices` letters; None if none."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:num_choices]
    for pattern in (_ANSWER_LETTER, _PARENTHESISED_LETTER):
        found = [m.group(1) for m in pattern.finditer(text)]
        found = [letter for letter in found if letter in letters]
        if found:
            return found[-1]
    bare = text.strip().rstrip(".").strip()
    return bare if len(bare) == 1 and bare in letters else None


def _boxed_contents(text: str) -> list[str]:
    """Contents of every complete \\boxed{...} (balanced braces) or \\boxed X, in order of appearance."""
    found: list[tuple[int, str]] = []
    for start in _BOX_START.finditer(text):
        depth, i = 1, start.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:  # a box cut off by the generation budget is not an answer
            found.append((start.start(), text[start.end() : i - 1]))
    found.extend((m.start(), m.group(1)) for m in _BOX_BARE.finditer(text))
    return [content for _, content in sorted(found)]


def _box_integer(content: str) -> int | None:
    """The integer a box holds once decoration is removed, or None if it holds anything else."""
    s = content
    for _ in range(3):  # nested wrappers: \text{\textbf{42}}
        s = _LATEX_WRAPPERS.sub(r"\1", s)
    s = _LATEX_SPACES.sub("", s)
    s = _DEGREES.sub("", s)
    s = s.replace("{,}", ",").replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    s = _LEADING_VARIABLE.sub("", s.strip()).strip().rstrip(".").strip()
    match = _NUMBER.fullmatch(s)
    return _integer_value(match) if match else None


def _integer_value(match: re.Match[str]) -> int | None:
    value = Decimal(match["digits"].replace(",", "") + (match["fraction"] or ""))
    if value != value.to_integral_value():
        return None
    return -int(value) if match["sign"] in ("-", "\u2212") else int(value)


def _fold(text: str) -> str:
    return " ".join(text.split()).rstrip(".").strip().casefold()
