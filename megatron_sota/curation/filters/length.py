"""Drops documents whose character or whitespace-word count is outside configured bounds.

Counts only; it must not modify the text or annotate metadata.
"""

from __future__ import annotations

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from megatron_sota.errors import MegatronSotaError


def _check_bounds(kind: str, low: int, high: int | None) -> None:
    if low < 0 or (high is not None and high < low):
        raise MegatronSotaError(
            f"LengthFilter: expected 0 <= min_{kind} <= max_{kind}, found min_{kind}={low}, max_{kind}={high}"
        )


class LengthFilter(BaseFilter):
    """Keeps documents with min_chars <= len(text) <= max_chars and min_words <= len(text.split()) <= max_words."""

    name = "length"

    def __init__(
        self,
        min_chars: int = 0,
        max_chars: int | None = None,
        min_words: int = 0,
        max_words: int | None = None,
        exclusion_writer: DiskWriter | None = None,
    ):
        super().__init__(exclusion_writer)
        _check_bounds("chars", min_chars, max_chars)
        _check_bounds("words", min_words, max_words)
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.min_words = min_words
        self.max_words = max_words

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        chars = len(doc.text)
        if chars < self.min_chars:
            return False, "too_few_chars"
        if self.max_chars is not None and chars > self.max_chars:
            return False, "too_many_chars"
        words = len(doc.text.split())
        if words < self.min_words:
            return False, "too_few_words"
        if self.max_words is not None and words > self.max_words:
            return False, "too_many_words"
        return True
