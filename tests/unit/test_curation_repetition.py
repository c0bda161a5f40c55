"""The Gopher repetition rule's array statistics equal datatrove's own functions and verdicts (it notices upstream
changes: datatrove's rule and helpers are the oracle, run beside ours).

Word lists are drawn from tiny alphabets, so repeated n-grams, ties for the most common one, n-grams that join to
the same text across other word boundaries (["ab", "c"] and ["a", "bc"]) and words holding a space all occur often.
"""

from __future__ import annotations

import random

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import GopherRepetitionFilter
from datatrove.pipeline.filters.gopher_repetition_filter import find_all_duplicate, find_top_duplicate, get_n_grams

from megatron_sota.curation.filters.repetition import FastGopherRepetitionFilter, WordNGrams
from megatron_sota.curation.word_split import SharedWordSplitter
from tests.curation.corpus import build_web_corpus

ALPHABETS = [
    ["a", "b"], ["a", "b", "ab", "ba", "c"], ["x", "xx", "xxx"], ["a", "b c", "a b", "c"], ["é", "🙂", "e\u0301"],
]


def _word_lists(count: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    lists = [[], ["one"], ["a", "a"], ["ab", "c", "a", "bc"]]
    while len(lists) < count:
        alphabet = rng.choice(ALPHABETS)
        lists.append([rng.choice(alphabet) for _ in range(rng.randint(0, 60))])
    return lists


def test_top_and_repeated_n_gram_characters_equal_datatrove_functions():
    boundary_collisions = 0
    for words in _word_lists(3000):
        grams = WordNGrams(words)
        for n in (1, 2, 3, 4):
            n_grams = get_n_grams(words, n)
            assert grams.top_chars(n) == (find_top_duplicate(n_grams) if n_grams else None), (words, n)
        for n in range(1, 11):
            assert grams.repeated_chars(n) == find_all_duplicate(words, n), (words, n)
            texts = {"".join(words[i:i + n]) for i in range(len(words) - n + 1)}
            tuples = {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
            boundary_collisions += len(texts) < len(tuples)
    assert boundary_collisions > 100  # the case word tuples alone would get wrong was exercised


def test_repeated_n_grams_on_long_documents_with_few_candidates():
    rng = random.Random(1)
    vocabulary = [f"w{i}" for i in range(5000)]
    for _ in range(20):
        words = [rng.choice(vocabulary) for _ in range(3000)]
        start = rng.randrange(2000)
        words[start + 500:start + 520] = words[start:start + 20]  # one planted repeat among unique n-grams
        grams = WordNGrams(words)
        for n in range(2, 11):
            assert grams.repeated_chars(n) == find_all_duplicate(words, n)
            assert grams.top_chars(n) == find_top_duplicate(get_n_grams(words, n))


@pytest.mark.parametrize("limits", [{}, {"dup_line_frac": None, "dup_para_frac": None, "top_n_grams": ((2, 0.05),)}])
def test_verdicts_equal_datatrove_rule_on_the_planted_corpus(limits):
    docs = [Document(text=d.text, id=d.id) for seed in range(3) for d in build_web_corpus(seed=seed)]
    docs += [Document(text=t, id=f"edge{i}") for i, t in enumerate(["", "\n\n\n", "a a a a a a", "x\n\nx\n\nx"])]
    splitter = SharedWordSplitter("en")
    ours = FastGopherRepetitionFilter(language=splitter, **limits)
    theirs = GopherRepetitionFilter(language="en", **limits)
    verdicts = [ours.filter(doc) for doc in docs]
    assert verdicts == [theirs.filter(doc) for doc in docs]
    reasons = {v[1] for v in verdicts if v is not True}
    assert len(reasons) >= 3 and any(r.startswith(("top_", "duplicated_")) for r in reasons), reasons
