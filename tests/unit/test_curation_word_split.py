"""The shared word splitter gives datatrove's own SpaCyTokenizer results, text by text (it notices upstream changes).

Compared on the planted web corpus, its lines (what C4 splits into sentences) and its MinHash-simplified text, on
edge cases spaCy treats specially, and across a rebuild of the spaCy model; each split is checked against a fresh
datatrove tokenizer, so a datatrove or spaCy upgrade that changes the split fails here.
"""

from __future__ import annotations

import pickle

import pytest
from datatrove.utils.text import simplify_text
from datatrove.utils.word_tokenizers import SpaCyTokenizer, WordTokenizer, load_word_tokenizer

from megatron_sota.curation.word_split import SharedWordSplitter
from tests.curation.corpus import build_web_corpus

EDGE_CASES = [
    "",
    "   ",
    "\n\n\t \n",
    "one",
    "Don't stop: U.S. e-mail at http://example.com/a?b=1 costs $3.50 (approx.) :-) ... ok?!",
    "Tabs\tand  double  spaces\nand\r\nCRLF lines\u00a0with a no-break space.",
    "Unicode: naïve café — “quotes” … 東京 and emoji 🙂🙂 end.",
    "Sentences. Many of them! Are they split? Yes... they are.\n\nNew paragraph here.",
    "x" * 3000,
]


def _texts() -> list[str]:
    docs = build_web_corpus(seed=0)
    texts = [d.text for d in docs]
    lines = [line.strip() for text in texts for line in text.splitlines() if line.strip()]
    return EDGE_CASES + texts + lines[:100] + [simplify_text(t) for t in texts[:20]]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return _texts()


def _assert_same_splits(shared: SharedWordSplitter, stock: WordTokenizer, texts: list[str]) -> None:
    for text in texts:
        assert shared.word_tokenize(text) == stock.word_tokenize(text), text[:80]
        assert shared.span_tokenize(text) == stock.span_tokenize(text), text[:80]
        assert shared.sent_tokenize(text) == stock.sent_tokenize(text), text[:80]


def test_splits_equal_datatrove_spacy_tokenizer(texts):
    shared = SharedWordSplitter("en")
    assert shared.uses_spacy  # the fast path is what is being compared
    _assert_same_splits(shared, SpaCyTokenizer("en"), texts)
    # The second pass answers from the cache: it must give the same splits.
    _assert_same_splits(shared, SpaCyTokenizer("en"), texts[:50])


def test_a_text_naming_a_spacy_attribute_splits_as_datatrove_first_splits_it_every_time():
    # datatrove's memory zones make its split of such a text depend on its history (word_split.py's docstring).
    text = "IS_ALPHA is a spaCy attribute name. It once broke the tokenizer; datatrove drops it and retries."
    shared = SharedWordSplitter("en")
    for _ in range(3):
        assert shared._split_words(text) == SpaCyTokenizer("en").word_tokenize(text)
        assert shared._split_spans(text) == SpaCyTokenizer("en").span_tokenize(text)
        assert shared._split_sentences(text) == SpaCyTokenizer("en").sent_tokenize(text)
    assert "IS_ALPHA" in shared.word_tokenize(text)


def test_splits_stay_equal_across_model_rebuilds(texts):
    shared = SharedWordSplitter("en", max_lexemes=1500, cached_texts=2)
    models = set()
    for text in texts[:40]:
        shared.word_tokenize(text)
        models.add(id(shared._nlp))
    assert len(models) > 1, "the vocabulary limit never rebuilt the model"
    assert len(shared._nlp.vocab) <= 1500 + max(len(t.split()) * 3 for t in texts[:40])
    _assert_same_splits(shared, SpaCyTokenizer("en"), texts[:40])


def test_pickled_splitter_starts_empty_and_splits_the_same(texts):
    shared = SharedWordSplitter("en")
    shared.word_tokenize(texts[20])
    copy = pickle.loads(pickle.dumps(shared))
    assert copy._nlp is None and not copy._words.entries
    assert copy.word_tokenize(texts[20]) == shared.word_tokenize(texts[20])


def test_a_language_without_a_plain_spacy_model_uses_datatrove_tokenizer():
    shared = SharedWordSplitter("div")  # datatrove assigns Dhivehi a WhitespaceTokenizer, not a spaCy model
    assert not shared.uses_spacy
    stock = load_word_tokenizer("div")
    for text in EDGE_CASES[3:6]:
        assert shared.word_tokenize(text) == stock.word_tokenize(text)
        assert shared.span_tokenize(text) == stock.span_tokenize(text)


def test_a_proxy_language_gets_the_model_datatrove_picks_for_it(texts):
    shared = SharedWordSplitter("zh")  # datatrove splits Chinese with spaCy's multi-language "xx" model
    assert shared.uses_spacy
    _assert_same_splits(shared, load_word_tokenizer("zh"), EDGE_CASES + texts[len(EDGE_CASES) : len(EDGE_CASES) + 5])
