"""Prose paragraphs from the Python documentation topics (pydoc_data), cleaned so every quality rule accepts them.

The source of the clean planted documents; it must not write files."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache

from tests.curation.shingles import word_tokenizer

MIN_PARAGRAPH_WORDS = 12
_MAX_PARAGRAPH_WORDS = 220
# Characters that only show up in code, markup, or text the quality filters treat specially
# (C4 drops documents with "{", Gopher counts "#" and ellipses).
_CODE_CHARS = ("{", "}", ">>>", "...", "…", "#", "=", "*", "`", "\\", "|", "<", ">", "[", "]", "::")
_BANNED_PHRASES = ("javascript", "lorem ipsum", "terms of use", "privacy policy", "cookie")
_TERMINAL = (".", "?", "!")
# pydoc renders reST markup as plain characters: *emphasis*, "literal" and call parentheses name(). They are
# typography, not words, and Gopher would count each quote and parenthesis as a non-alphabetic word.
_MARKUP = (
    (re.compile(r"\*([^\s*][^*]*?)\*"), r"\1"),
    (re.compile(r'"([^"]+)"'), r"\1"),
    (re.compile(r"(\w)\(\)"), r"\1"),
)
# A plain word, optionally bracketed, optionally followed by punctuation.
_PLAIN_WORD = re.compile(r"^\(?[A-Za-z][A-Za-z'’\-]*\)?[,.;:?!]?\)?$")
_MIN_PLAIN_WORDS = 0.85
# Gopher drops a document when under 80% of its words (punctuation tokens included) contain a letter. Paragraphs
# below _MIN_ALPHA_PARAGRAPH are too code-like to keep; documents are assembled to stay above MIN_ALPHA_DOC.
_MIN_ALPHA_PARAGRAPH = 0.75
MIN_ALPHA_DOC = 0.83


@dataclass(frozen=True)
class _Paragraph:
    text: str
    words: int
    alpha_tokens: int
    tokens: int


def _flatten(paragraph: str) -> str | None:
    """One line of text from a wrapped paragraph; None when its lines are not uniformly indented.

    Uniform indentation is kept because definition-list bodies (method descriptions, notes) are indented prose;
    code blocks are rejected by the character and word-shape tests of _is_prose instead.
    """
    lines = paragraph.split("\n")
    if len({len(line) - len(line.lstrip()) for line in lines}) != 1:
        return None
    text = " ".join(line.strip() for line in lines)
    for pattern, replacement in _MARKUP:
        text = pattern.sub(replacement, text)
    # the wrapper breaks lines after hyphens ("comma-\nseparated"), which joining turned into "comma- separated"
    text = re.sub(r"(\w)- (\w)", r"\1-\2", text)
    return re.sub(r"\s+", " ", text).strip()


def _is_prose(text: str) -> bool:
    words = text.split()
    if not MIN_PARAGRAPH_WORDS <= len(words) <= _MAX_PARAGRAPH_WORDS or not text.endswith(_TERMINAL):
        return False
    if any(s in text for s in _CODE_CHARS) or any(p in text.lower() for p in _BANNED_PHRASES):
        return False
    return sum(bool(_PLAIN_WORD.match(w)) for w in words) >= _MIN_PLAIN_WORDS * len(words)


def measure(text: str) -> _Paragraph:
    tokens = word_tokenizer().word_tokenize(text)
    alpha = sum(any(c.isalpha() for c in t) for t in tokens)
    return _Paragraph(text, word_count(text), alpha, len(tokens))


@lru_cache(maxsize=None)
def _prose_pool() -> tuple[_Paragraph, ...]:
    """Every distinct prose paragraph of pydoc_data.topics, in sorted-topic order (one line each)."""
    from pydoc_data.topics import topics

    seen: set[str] = set()
    pool: list[_Paragraph] = []
    for key in sorted(topics):
        for block in re.split(r"\n\s*\n", topics[key]):
            text = _flatten(block)
            # topics repeat each other (compound contains if, while, ...), so drop repeats
            if text is None or text in seen or not _is_prose(text):
                continue
            seen.add(text)
            paragraph = measure(text)
            if paragraph.alpha_tokens >= _MIN_ALPHA_PARAGRAPH * paragraph.tokens:
                pool.append(paragraph)
    return tuple(pool)


def word_count(text: str) -> int:
    return len(text.split())


# Every _RESERVED_EVERY-th paragraph is kept for write_bad_input's good documents, so they never appear in a corpus.
_RESERVED_EVERY = 30


def reserved_paragraphs() -> list[_Paragraph]:
    return list(_prose_pool()[::_RESERVED_EVERY])


def corpus_paragraphs(seed: int) -> list[_Paragraph]:
    pool = [p for i, p in enumerate(_prose_pool()) if i % _RESERVED_EVERY]
    random.Random(seed).shuffle(pool)
    return pool


class ParagraphSource:
    """Hands out paragraphs, each one once, so no two documents share text unless planted."""

    def __init__(self, paragraphs: list[_Paragraph]):
        self._left = list(paragraphs)

    def take_words(self, target_words: int, min_alpha: float = MIN_ALPHA_DOC) -> list[str]:
        """Paragraphs, in order, until target_words; one that would pull the document's share of alphabetic
        tokens under min_alpha waits for a later document."""
        taken: list[_Paragraph] = []
        words = alpha = tokens = 0
        for p in list(self._left):
            if words >= target_words:
                break
            if alpha + p.alpha_tokens >= min_alpha * (tokens + p.tokens):
                taken.append(p)
                self._left.remove(p)
                words, alpha, tokens = words + p.words, alpha + p.alpha_tokens, tokens + p.tokens
        if words < target_words:
            raise RuntimeError("ran out of prose paragraphs; lower the document targets")
        return [p.text for p in taken]


