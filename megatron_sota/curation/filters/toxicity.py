"""Scores documents chunk by chunk with the offline alt-profanity-check model and drops mostly-toxic ones.

The model is imported lazily in the worker and never pickled; it must not download anything or edit text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from datatrove.data import Document
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter

from megatron_sota.errors import MegatronSotaError

# Why chunk_threshold defaults to 0.8 (measured with alt-profanity-check 1.0.6, 64-word chunks):
# - 13,335 chunks of clean technical prose (pydoc_data topics + stdlib/site-packages docstrings) peak at 0.39,
#   none reach 0.5;
# - chunks of a paragraph dense with insults and profanity all score 1.00;
# - one insult inside 64 words of prose scores 0.76: not counted, a single swear word is not a toxic document.
# Short fragments are unreliable ("kill the process and collect garbage" scores 0.86), hence whole chunks and
# a short tail merged into the previous chunk.


def split_into_chunks(text: str, chunk_words: int) -> list[str]:
    """Consecutive chunks of chunk_words words; a tail shorter than half a chunk joins the previous chunk."""
    words = text.split()
    chunks = [words[i : i + chunk_words] for i in range(0, len(words), chunk_words)]
    if len(chunks) > 1 and len(chunks[-1]) < chunk_words / 2:
        tail = chunks.pop()
        chunks[-1] = chunks[-1] + tail
    return [" ".join(chunk) for chunk in chunks]


def load_predict_prob() -> Callable[[Sequence[str]], Sequence[float]]:
    """profanity_check.predict_prob; importing the module loads its sklearn model (~1 s), so it happens here."""
    try:
        from profanity_check import predict_prob
    except ImportError as e:
        raise MegatronSotaError(
            "ToxicityFilter: expected the 'profanity_check' module (pip package alt-profanity-check), "
            "found it not installed"
        ) from e
    return predict_prob


class ToxicityFilter(BaseFilter):
    """Stores metadata["toxicity"] (fraction of chunks with probability >= chunk_threshold) on every document
    and drops documents whose fraction exceeds max_toxic_fraction."""

    name = "toxicity"

    def __init__(
        self,
        max_toxic_fraction: float = 0.05,
        chunk_words: int = 64,
        chunk_threshold: float = 0.8,
        batch_size: int = 64,
        exclusion_writer: DiskWriter | None = None,
    ):
        super().__init__(exclusion_writer, batch_size=batch_size)
        if chunk_words < 1:
            raise MegatronSotaError(f"ToxicityFilter: expected chunk_words >= 1, found {chunk_words}")
        if not 0.0 <= chunk_threshold <= 1.0 or not 0.0 <= max_toxic_fraction <= 1.0:
            raise MegatronSotaError(
                "ToxicityFilter: expected chunk_threshold and max_toxic_fraction in [0, 1], "
                f"found {chunk_threshold} and {max_toxic_fraction}"
            )
        self.max_toxic_fraction = max_toxic_fraction
        self.chunk_words = chunk_words
        self.chunk_threshold = chunk_threshold

    def toxic_fractions(self, texts: Sequence[str]) -> list[float]:
        """Per text, the fraction of its chunks scored >= chunk_threshold; one model call for all chunks."""
        per_text = [split_into_chunks(text, self.chunk_words) for text in texts]
        flat = [chunk for chunks in per_text for chunk in chunks]
        probs = load_predict_prob()(flat) if flat else []
        fractions, start = [], 0
        for chunks in per_text:
            toxic = sum(float(p) >= self.chunk_threshold for p in probs[start : start + len(chunks)])
            fractions.append(round(toxic / len(chunks), 4) if chunks else 0.0)
            start += len(chunks)
        return fractions

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        results: list[bool | tuple[bool, str]] = []
        for doc, fraction in zip(batch, self.toxic_fractions([doc.text for doc in batch])):
            doc.metadata["toxicity"] = fraction
            results.append((False, "toxic") if fraction > self.max_toxic_fraction else True)
        return results

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]
