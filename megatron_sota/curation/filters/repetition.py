"""datatrove's Gopher repetition rule with its word n-gram statistics computed by array passes; same verdicts.

datatrove 0.10.1's ``GopherRepetitionFilter`` builds every n-gram of a document as a Python string, 9 times
(n = 2..10): ~60% of the rule's time and the largest single cost of the web pipeline after the word split. Here
the same two statistics come from integer arrays, and strings are built only where they decide the answer:

- *top n-gram characters* (n = 2, 3, 4): the n-grams are ``" ".join``-ed words, counted; the most common one's
  count times its length, ties going to the one seen first (``Counter.most_common``). When no word holds a space,
  two joined n-grams are equal exactly when their word tuples are, so the tuples are numbered (each n from n - 1's
  numbers and the next word's) and counted with ``bincount``. A word with a space falls back on datatrove's function.
- *duplicated n-gram characters* (n = 5..10): a left-to-right walk over ``"".join``-ed n-grams (no separator, so
  ``["ab", "c"]`` equals ``["a", "bc"]``) that adds an unseen one to a set and skips n words past a seen one. Only
  an n-gram whose text occurs twice in the document can ever be "seen", so a position hash of each n-gram's text
  (characters, polynomial mod 2^64) marks those; the walk visits just them and compares real strings. A hash
  collision only adds a position to visit, so the answer never depends on the hash being good.

Paragraphs and lines use datatrove's own ``find_duplicates``; the order of checks and the reasons are datatrove's.
tests/unit/test_curation_repetition.py compares verdicts with datatrove's rule on the planted corpus and edge cases.
"""

from __future__ import annotations

import numpy as np
from datatrove.data import Document
from datatrove.pipeline.filters import GopherRepetitionFilter
from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates, find_top_duplicate, get_n_grams
from datatrove.utils.text import split_into_words

_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so invertible mod 2^64
_BASE_INVERSE = np.uint64(pow(int(_BASE), -1, 1 << 64))


class WordNGrams:
    """The n-gram statistics of one document's words."""

    def __init__(self, words: list[str]):
        self.words = words
        self.offsets = np.zeros(len(words) + 1, dtype=np.int64)  # character offsets in "".join(words)
        np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)), out=self.offsets[1:])
        self._joined = "".join(words)
        self._spaced = " " in self._joined
        numbers = {word: i for i, word in enumerate(dict.fromkeys(words))}
        ids = np.fromiter(map(numbers.__getitem__, words), dtype=np.int64, count=len(words))
        self._tuple_ids = {1: ids}  # n -> a number per n-gram start, equal exactly when the word tuples are
        self._prefix_hash: np.ndarray | None = None
        self._inverse_powers: np.ndarray | None = None

    def _ids(self, n: int) -> np.ndarray:
        if n not in self._tuple_ids:
            shorter, last = self._ids(n - 1)[:-1], self._tuple_ids[1][n - 1:]
            pairs = shorter * (int(last.max(initial=0)) + 1) + last
            self._tuple_ids[n] = np.unique(pairs, return_inverse=True)[1].reshape(-1)
        return self._tuple_ids[n]

    def top_chars(self, n: int) -> int | None:
        """Count x length of the most common " ".join-ed n-gram (first seen among ties); None without n-grams."""
        if len(self.words) < n:
            return None
        if self._spaced:
            return find_top_duplicate(get_n_grams(self.words, n))
        ids = self._ids(n)
        counts = np.bincount(ids)
        most = counts.max()
        start = int(np.argmax(counts[ids] == most))  # the first n-gram of a most common kind
        return (int(self.offsets[start + n] - self.offsets[start]) + n - 1) * int(most)

    def _text_hashes(self, n: int) -> np.ndarray:
        """A hash of "".join(words[i:i + n]) for every start i, equal for equal texts."""
        if self._prefix_hash is None:
            codes = np.frombuffer(self._joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
            powers = np.cumprod(np.concatenate(([np.uint64(1)], np.full(len(codes), _BASE, dtype=np.uint64))))
            self._prefix_hash = np.concatenate(([np.uint64(0)], np.cumsum(codes * powers[:-1], dtype=np.uint64)))
            self._inverse_powers = np.cumprod(
                np.concatenate(([np.uint64(1)], np.full(len(codes), _BASE_INVERSE, dtype=np.uint64))))
        starts, ends = self.offsets[: len(self.words) - n + 1], self.offsets[n:]
        return (self._prefix_hash[ends] - self._prefix_hash[starts]) * self._inverse_powers[starts]

    def repeated_chars(self, n: int) -> int:
        """Characters of the "".join-ed n-grams a left-to-right walk finds seen before, skipping n words after each."""
        if len(self.words) < n:
            return 0
        hashes = self._text_hashes(n)
        order = np.argsort(hashes)
        same = hashes[order[1:]] == hashes[order[:-1]]
        if not same.any():
            return 0
        marked = np.zeros(len(hashes), dtype=bool)
        marked[order[1:][same]] = marked[order[:-1][same]] = True
        candidates = np.flatnonzero(marked).tolist()
        offsets, joined = self.offsets.tolist(), self._joined
        seen: set[str] = set()
        repeated = position = 0
        for start in candidates:
            if start < position:
                continue
            gram = joined[offsets[start]:offsets[start + n]]
            if gram in seen:
                repeated += len(gram)
                position = start + n
            else:
                seen.add(gram)
                position = start + 1
        return repeated


class FastGopherRepetitionFilter(GopherRepetitionFilter):
    """datatrove's ``GopherRepetitionFilter`` (same arguments, name and reasons) with array n-gram statistics."""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        text = doc.text
        if not text:
            return False, "empty"
        reason = self._block_reason(text)
        if reason:
            return False, reason
        words = split_into_words(text, self.language)
        grams = WordNGrams(words)
        for n, limit in self.top_n_grams:
            chars = grams.top_chars(n)
            if chars is not None and chars / len(text) > limit:
                return False, f"top_{n}_gram"
        for n, limit in self.dup_n_grams:
            if grams.repeated_chars(n) / len(text) > limit:
                return False, f"duplicated_{n}_n_grams"
        return True

    def _block_reason(self, text: str) -> str | None:
        """datatrove's paragraph then line checks: the first one over its limit, or None."""
        blocks = (("para", self.paragraph_exp.split(text.strip()), self.dup_para_frac, self.dup_para_char_frac),
                  ("line", self._line_splitter.split(text), self.dup_line_frac, self.dup_line_char_frac))
        for kind, parts, part_limit, char_limit in blocks:
            duplicates, chars = find_duplicates(parts)
            if part_limit and duplicates / len(parts) > part_limit:
                return f"dup_{kind}_frac"
            if char_limit and chars / len(text) > char_limit:
                return f"dup_{kind}_char_frac"
        return None
