"""Annotates each document with a [0, 1] heuristic quality score and the named signals it is the weighted mean of.

It never drops or edits documents (a later step or the data mix decides what to do with the score).

The score is ``sum(w[s] * signal[s]) / sum(w[s])`` over the signals ``s`` whose weight is > 0 (a name missing
from the weights weighs 0), rounded to 4 digits, stored in ``doc.metadata["quality_score"]``; every signal,
weighted or not, is stored rounded to 4 digits in ``doc.metadata["quality_signals"]``. Words are
``text.split()``; lines are the stripped, non-empty ``text.splitlines()``. ``ramp(x, lo, hi)`` below is 0 at
``x <= lo``, 1 at ``x >= hi`` and linear in between. An empty text scores 0 on every text signal.

Signals, each in [0, 1], 1 meaning "looks like good training data":

- ``language``: ``metadata["language_score"]`` (fastText confidence written by LanguageFilter); 1.0 when absent.
- ``alpha_words``: fraction of words containing at least one alphabetic character, ``ramp(f, 0, 0.8)``
  (Gopher keeps documents with >= 80 % such words; number tables and symbol soup score low).
- ``stop_words``: fraction of words (lower-cased, surrounding punctuation stripped) that are in ``STOP_WORDS``,
  ~80 of the most frequent English function words; ``ramp(f, 0, 0.25)``. Running English prose measures
  0.36-0.47 with this set (pydoc topics prose, median 0.42) while keyword lists, spam and number lists measure
  ~0, so saturating at 0.25 leaves terse but real prose (captions, technical notes) at 1 without rewarding
  extra function words. English-specific: weigh it 0 for other languages.
- ``word_length``: mean word length ``m`` in characters; 1 for ``3 <= m <= 10``, ``ramp(m, 1, 3)`` below,
  ``1 - ramp(m, 10, 15)`` above (Gopher's 3-10 range; digit lists and hash/URL dumps fall outside).
- ``line_punctuation``: fraction of lines ending in one of ``. ! ? " ' ) : ;``, ``ramp(f, 0, 0.25)``.
  Web text ends nearly every line (paragraph) in punctuation, but hard-wrapped prose (books, manuals, the
  pydoc topics) only one line in 3-5 (pydoc topics: median 0.24, down to 0.10), and FineWeb keeps text
  from 0.12 up; so 0.25 saturates.
- ``unique_lines``: ``1 - duplicates / lines``, duplicates counting each line equal to an earlier line.
- ``repetition``: ``1 - ramp(f, 0.2, 0.8)``, ``f`` the fraction of words inside a word 5-gram (lower-cased)
  that occurs more than once: Gopher's duplicate n-gram measure. It sees in-line spam such as
  ``"buy now cheap pills " * 50`` (f = 1), which ``unique_lines`` cannot; pydoc prose measures median 0.07, and
  up to 0.45 for reference text that repeats phrases such as 'a "yield" statement'.
- ``non_toxic``: ``1 - metadata["toxicity"]`` (written by ToxicityFilter); 1.0 when absent.
- ``length``: ``ramp(log(words), log(10), log(300))``: 0 at <= 10 words, 1 at >= 300; log-scaled because
  20 vs 40 words says more about a document than 200 vs 400.
- ``code_alnum``: alphanumeric characters / all characters (whitespace included), ``ramp(f, 0.25, 0.5)``;
  StarCoder drops files under 0.25; stdlib modules measure median 0.57, 95 % above 0.5.
- ``code_line_length``: mean length ``m`` of all lines (empty ones included), ``1 - ramp(m, 80, 200)``;
  minified and generated code has long lines.

``DEFAULT_WEIGHTS`` is for prose: code_* weigh 0, and the signals that tell language from junk weigh most
(stop_words, line_punctuation 3; alpha_words, repetition 2; the rest 1), because language, non_toxic,
unique_lines and word_length are 1.0 for most junk as well: with equal weights "buy now cheap pills " * 50
would score 0.65. ``CODE_WEIGHTS`` is for source code: stop_words, line_punctuation and language weigh 0 and
the code_* signals 2. Calibration (Python 3.11 stdlib): prose documents of >= 300 words from pydoc topics
score 0.88-1.0 with DEFAULT_WEIGHTS; the pills spam 0.46, the numbers 0..199 0.44; the 465 stdlib modules
of >= 300 words score 0.85-1.0 (median 0.98) with CODE_WEIGHTS. One known blind spot of a mean: a good line
repeated 40 times still scores 0.80 (only unique_lines and repetition object); the Gopher repetition filter
catches that.
"""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from megatron_sota.errors import MegatronSotaError

# Frequent English function words only: content words would make the density depend on the topic.
STOP_WORDS = frozenset(
    """the of and to a in is that it for as with was on be by are this or at from an not but which have has
    had its can if they their there were been will would so we you he she his her i all no do does these those
    than then them into when what who may must should could our your my me him us""".split()
)
_TERMINAL_PUNCTUATION = tuple(".!?\"'):;")
_STRIP = string.punctuation + "“”‘’«»"
_NGRAM = 5


@dataclass(frozen=True)
class ParsedDoc:
    """What the signals look at, split once per document."""

    text: str
    words: list[str]
    lines: list[str]
    metadata: Mapping[str, Any]


def ramp(x: float, lo: float, hi: float) -> float:
    """0 at x <= lo, 1 at x >= hi, linear in between."""
    return min(1.0, max(0.0, (x - lo) / (hi - lo)))


def language(doc: ParsedDoc) -> float:
    return float(doc.metadata.get("language_score", 1.0))


def alpha_words(doc: ParsedDoc) -> float:
    if not doc.words:
        return 0.0
    return ramp(sum(1 for w in doc.words if any(map(str.isalpha, w))) / len(doc.words), 0.0, 0.8)


def stop_words(doc: ParsedDoc) -> float:
    if not doc.words:
        return 0.0
    return ramp(sum(w.strip(_STRIP).lower() in STOP_WORDS for w in doc.words) / len(doc.words), 0.0, 0.25)


def word_length(doc: ParsedDoc) -> float:
    if not doc.words:
        return 0.0
    mean = sum(map(len, doc.words)) / len(doc.words)
    return ramp(mean, 1, 3) if mean < 3 else 1.0 - ramp(mean, 10, 15)


def line_punctuation(doc: ParsedDoc) -> float:
    if not doc.lines:
        return 0.0
    return ramp(sum(line.endswith(_TERMINAL_PUNCTUATION) for line in doc.lines) / len(doc.lines), 0.0, 0.25)


def unique_lines(doc: ParsedDoc) -> float:
    if not doc.lines:
        return 0.0
    return len(set(doc.lines)) / len(doc.lines)


def repetition(doc: ParsedDoc) -> float:
    if not doc.words:
        return 0.0
    words = [w.lower() for w in doc.words]
    grams = list(zip(*(words[k:] for k in range(_NGRAM))))  # every run of _NGRAM consecutive words
    counts = Counter(grams)
    covered = {i + k for i, gram in enumerate(grams) if counts[gram] > 1 for k in range(_NGRAM)}
    return 1.0 - ramp(len(covered) / len(words), 0.2, 0.8)


def non_toxic(doc: ParsedDoc) -> float:
    return 1.0 - float(doc.metadata.get("toxicity", 0.0))


def length(doc: ParsedDoc) -> float:
    return ramp(math.log(max(len(doc.words), 1)), math.log(10), math.log(300))


def code_alnum(doc: ParsedDoc) -> float:
    if not doc.text:
        return 0.0
    return ramp(sum(map(str.isalnum, doc.text)) / len(doc.text), 0.25, 0.5)


def code_line_length(doc: ParsedDoc) -> float:
    raw_lines = doc.text.splitlines()
    if not raw_lines:
        return 0.0
    return 1.0 - ramp(sum(map(len, raw_lines)) / len(raw_lines), 80, 200)


SIGNALS: Mapping[str, Callable[[ParsedDoc], float]] = MappingProxyType(
    {
        fn.__name__: fn
        for fn in (
            language,
            alpha_words,
            stop_words,
            word_length,
            line_punctuation,
            unique_lines,
            repetition,
            non_toxic,
            length,
            code_alnum,
            code_line_length,
        )
    }
)

DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "language": 1.0,
        "alpha_words": 2.0,
        "stop_words": 3.0,
        "word_length": 1.0,
        "line_punctuation": 3.0,
        "unique_lines": 1.0,
        "repetition": 2.0,
        "non_toxic": 1.0,
        "length": 1.0,
        "code_alnum": 0.0,
        "code_line_length": 0.0,
    }
)

CODE_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "language": 0.0,
        "alpha_words": 1.0,
        "stop_words": 0.0,
        "word_length": 1.0,
        "line_punctuation": 0.0,
        "unique_lines": 1.0,
        "repetition": 1.0,
        "non_toxic": 1.0,
        "length": 1.0,
        "code_alnum": 2.0,
        "code_line_length": 2.0,
    }
)


def compute_signals(text: str, metadata: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Every signal of SIGNALS for one text, unrounded."""
    lines = [line.strip() for line in text.splitlines()]
    doc = ParsedDoc(text=text, words=text.split(), lines=[line for line in lines if line], metadata=metadata or {})
    return {name: fn(doc) for name, fn in SIGNALS.items()}


def weighted_score(signals: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Weighted mean of the signals whose weight is > 0."""
    used = {name: w for name, w in weights.items() if w > 0}
    total = sum(used.values())
    return sum(w * signals[name] for name, w in used.items()) / total if total else 0.0


def validated_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """A copy of weights (DEFAULT_WEIGHTS when None) after checking names and values."""
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    unknown = sorted(set(weights) - set(SIGNALS))
    if unknown:
        raise MegatronSotaError(
            f"QualityScorer: unknown weight name(s) {unknown}; expected names among {sorted(SIGNALS)}"
        )
    values = {name: float(w) for name, w in weights.items()}
    if any(w < 0 for w in values.values()) or not any(w > 0 for w in values.values()):
        raise MegatronSotaError(
            f"QualityScorer: expected weights >= 0 with at least one > 0, found {values}"
        )
    return values


class QualityScorer(PipelineStep):
    """Stores metadata["quality_score"] and metadata["quality_signals"] on every document; drops nothing."""

    name = "quality score"
    type = "📊 - STATS"

    def __init__(self, weights: dict[str, float] | None = None):
        super().__init__()
        self.weights = validated_weights(weights)

    def score(self, text: str, metadata: Mapping[str, Any] | None = None) -> tuple[float, dict[str, float]]:
        """(rounded score, rounded signals) of one text."""
        signals = compute_signals(text, metadata)
        return round(weighted_score(signals, self.weights), 4), {k: round(v, 4) for k, v in signals.items()}

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            with self.track_time():
                doc.metadata["quality_score"], doc.metadata["quality_signals"] = self.score(doc.text, doc.metadata)
            self.stat_update("quality_score", value=doc.metadata["quality_score"])
            yield doc
