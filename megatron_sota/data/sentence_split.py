"""Rule-based sentence splitting for `--split-sentences`, with nothing to download.

Megatron-LM uses NLTK's punkt model, which must be fetched at run time; these rules cover the
common cases (terminal punctuation, closing quotes, abbreviations). It must not tokenize.
"""

from __future__ import annotations

import re

# A sentence ends at . ! ? (plus closing quotes/brackets) followed by whitespace and then
# something that can start a sentence.
_BOUNDARY = re.compile(r"""[.!?]+["')\]\u201d\u2019]*(?P<gap>\s+)(?=["'(\[\u201c\u2018]?[A-Z0-9])""")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e fig no vol inc ltd co corp dept est approx".split()
)


def _ends_with_abbreviation(text: str) -> bool:
    word = text.rsplit(None, 1)[-1] if text.strip() else ""
    word = word.rstrip(".").lstrip("(\"'").lower()
    # Single letters ("J. Smith") are initials, not sentence ends.
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def split_sentences(text: str, keep_newlines: bool = False) -> list[str]:
    """Sentences of `text` in order.

    keep_newlines=True keeps the whitespace after each sentence (newlines included) attached
    to it, so joining the sentences gives back the text exactly; otherwise each sentence is
    stripped, as punkt does.
    """
    sentences = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        end_of_sentence = match.start("gap")
        if _ends_with_abbreviation(text[start:end_of_sentence]):
            continue
        cut = match.end("gap") if keep_newlines else end_of_sentence
        sentences.append(text[start:cut])
        start = match.end("gap")
    sentences.append(text[start:])
    if keep_newlines:
        return [s for s in sentences if s]
    return [s.strip() for s in sentences if s.strip()]
