"""One word and sentence split per text, shared by every datatrove rule that needs one, equal to datatrove's own.

datatrove's Gopher, C4 and FineWeb rules and its MinHash signature take a ``language`` that may be a WordTokenizer
object instead of a code (``datatrove.utils.word_tokenizers.load_word_tokenizer`` passes one through unchanged), so
this is handed to them through that public parameter; no datatrove code is patched.

Why it is faster than datatrove's SpaCyTokenizer, with the same tokens:

- datatrove wraps every spaCy call in ``Language.memory_zone()``, which forgets every lexeme the call created; spaCy
  builds a new lexeme in ~70 us, so each document pays for all its words again (most of a web pipeline's time). Here
  spaCy keeps its vocabulary between texts, and the model is rebuilt once the vocabulary passes ``max_lexemes``, so
  memory stays bounded (~0.5 KB a lexeme) the way memory zones keep it bounded.
- the last texts' splits are kept, keyed by the text: the rules of one document, and a line repeated across
  documents (C4 counts sentences line by line), are split once.

Only spaCy's public API is used. A language whose datatrove tokenizer is not a plain ``spacy.blank`` model (Japanese,
Stanza, Thai, ...) and any text spaCy fails on go to datatrove's own tokenizer; tests/unit/test_curation_word_split.py
compares the two on the planted corpus and on edge cases.

One known difference: a text containing the string "IS_ALPHA" (a spaCy attribute
name) corrupts the vocabulary inside a memory zone, so datatrove's split of it depends on what it split before (the
whole text the first time or two, the text without "IS_ALPHA" after, or a KeyError). Without memory zones spaCy splits
it the same every time, as datatrove does the first time.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from datatrove.utils.word_tokenizers import SpaCyTokenizer, WordTokenizer, load_word_tokenizer, strip_strings

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MAX_LEXEMES = 200_000
"""Vocabulary size at which the spaCy model is rebuilt (~100 MB of lexemes)."""
DEFAULT_CACHED_TEXTS = 4096
"""Texts whose splits are kept, per kind of split: repeated lines hit it (a document's rules need the last few)."""
CACHED_CHARS = 2_000_000
"""Characters of text whose splits are kept, per kind of split (~20 MB of words)."""


class _Cache:
    """A least-recently-used map text -> split, bounded by entry count and by the characters of its texts (a split
    holds ~10 bytes per character of its text), always keeping the newest entry."""

    def __init__(self, entries: int, chars: int):
        self.max_entries = entries
        self.max_chars = chars
        self.chars = 0
        self.entries: OrderedDict[str, Any] = OrderedDict()

    def get(self, text: str, compute: Callable[[str], T]) -> T:
        found = self.entries.get(text)
        if found is not None:
            self.entries.move_to_end(text)
            return found
        value = compute(text)
        self.entries[text] = value
        self.chars += len(text)
        while len(self.entries) > 1 and (len(self.entries) > self.max_entries or self.chars > self.max_chars):
            oldest, _ = self.entries.popitem(last=False)
            self.chars -= len(oldest)
        return value


class SharedWordSplitter(WordTokenizer):
    """datatrove's word tokenizer for `language`, with spaCy's vocabulary kept between texts and recent splits cached.

    Pass it as the ``language`` of datatrove's filters; one instance shared by all of them shares the cache.
    """

    def __init__(
        self, language: str, max_lexemes: int = DEFAULT_MAX_LEXEMES, cached_texts: int = DEFAULT_CACHED_TEXTS
    ):
        super().__init__(language)
        self.max_lexemes = max_lexemes
        self.cached_texts = cached_texts
        self._stock: WordTokenizer | None = None
        self._uses_spacy: bool | None = None
        self._nlp: Any = None
        self._words = _Cache(cached_texts, CACHED_CHARS)
        self._sentences = _Cache(cached_texts, CACHED_CHARS)
        self._spans = _Cache(cached_texts, CACHED_CHARS)

    def __getstate__(self) -> dict:
        # Workers rebuild the models and start with empty caches (spaCy models pickle slowly and hold C state).
        state = self.__dict__.copy()
        state.update(_stock=None, _uses_spacy=None, _nlp=None, _words=_Cache(self.cached_texts, CACHED_CHARS),
                     _sentences=_Cache(self.cached_texts, CACHED_CHARS), _spans=_Cache(self.cached_texts, CACHED_CHARS))
        return state

    @property
    def stock(self) -> WordTokenizer:
        """datatrove's own tokenizer for the language."""
        if self._stock is None:
            self._stock = load_word_tokenizer(self.language)
        return self._stock

    @property
    def uses_spacy(self) -> bool:
        """Whether datatrove's tokenizer is a plain spacy.blank(language) model with a sentencizer."""
        if self._uses_spacy is None:
            stock = self.stock
            self._uses_spacy = type(stock) is SpaCyTokenizer and stock.config is None and stock.language != "ja"
        return self._uses_spacy

    def _model(self) -> Any:
        """spacy.blank with a sentencizer, as datatrove builds it; rebuilt when the vocabulary is full.

        Its language is datatrove's choice for ours (a proxy for some: "zh" is spaCy's multi-language "xx")."""
        if self._nlp is not None and len(self._nlp.vocab) > self.max_lexemes:
            self._nlp = None
        if self._nlp is None:
            import spacy

            self._nlp = spacy.blank(self.stock.language)
            self._nlp.add_pipe("sentencizer")
        return self._nlp

    def _spacy_doc(self, text: str, sentences: bool) -> Any:
        nlp = self._model()
        nlp.max_length = len(text) + 10
        # The tokenizer alone gives the tokens; the pipeline (its sentencizer) only marks sentence starts.
        return nlp(text) if sentences else nlp.make_doc(text)

    def _split(self, text: str, ours: Callable[[str], T], stock: Callable[[str], T]) -> T:
        if not self.uses_spacy:
            return stock(text)
        try:
            return ours(text)
        except Exception:  # noqa: BLE001 -- datatrove's own code decides what a text spaCy fails on gives
            log.warning("spaCy failed on a text of %d characters; datatrove's %s splits it", len(text), self.stock)
            return stock(text)

    def _split_words(self, text: str) -> list[str]:
        return self._split(
            text, lambda t: strip_strings([token.text for token in self._spacy_doc(t, sentences=False)]),
            self.stock.word_tokenize)

    def _split_sentences(self, text: str) -> list[str]:
        return self._split(
            text, lambda t: strip_strings([sent.text for sent in self._spacy_doc(t, sentences=True).sents]),
            self.stock.sent_tokenize)

    def _split_spans(self, text: str) -> list[tuple[int, int]]:
        return self._split(
            text, lambda t: [(sent.start_char, sent.end_char) for sent in self._spacy_doc(t, sentences=True).sents],
            self.stock.span_tokenize)

    def word_tokenize(self, text: str) -> list[str]:
        return self._words.get(text, self._split_words)

    def sent_tokenize(self, text: str) -> list[str]:
        return self._sentences.get(text, self._split_sentences)

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return self._spans.get(text, self._split_spans)
