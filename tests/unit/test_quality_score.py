"""Specification of the heuristic quality score: calibration on real prose, junk and code, and its arithmetic.

Corpus: pydoc topics paragraphs (clean English prose) and the running Python's standard library sources.
"""

from __future__ import annotations

import math
import os
import re
import sysconfig

import dill
import pytest
from datatrove.data import Document
from pydoc_data.topics import topics

from megatron_sota.curation.quality_score import (
    CODE_WEIGHTS,
    DEFAULT_WEIGHTS,
    SIGNALS,
    QualityScorer,
    compute_signals,
)
from megatron_sota.errors import MegatronSotaError

STDLIB = sysconfig.get_paths()["stdlib"]


def prose_documents(min_words: int = 300) -> list[str]:
    """Plain paragraphs of the pydoc topics (no indented examples), grouped into documents of >= min_words."""
    docs, current = [], []
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            if para.startswith((" ", "\t")) or not para.rstrip().endswith(".") or len(para.split()) <= 25:
                continue
            current.append(para.strip())
            if sum(len(p.split()) for p in current) >= min_words:
                docs.append("\n\n".join(current))
                current = []
    return docs


def read_stdlib(relative: str) -> str:
    with open(os.path.join(STDLIB, relative), encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def prose() -> list[str]:
    docs = prose_documents()
    assert len(docs) >= 30
    return docs


# --- calibration --------------------------------------------------------------------------------------------


def test_clean_english_prose_scores_at_least_0_8(prose):
    scorer = QualityScorer()
    scores = [scorer.score(text)[0] for text in prose]
    assert min(scores) >= 0.8, min(scores)


@pytest.mark.parametrize(
    "junk",
    [
        "buy now cheap pills " * 50,
        " ".join(str(i) for i in range(200)),
        "\n".join(str(i) for i in range(200)),
        "cheap flights hotels deals travel insurance car rental " * 20,
    ],
    ids=["spam", "numbers", "number-lines", "keywords"],
)
def test_repetitive_or_non_linguistic_junk_scores_below_0_5(junk):
    assert QualityScorer().score(junk)[0] < 0.5


@pytest.mark.parametrize("relative", ["os.py", "json/decoder.py", "argparse.py", "textwrap.py"])
def test_stdlib_modules_score_at_least_0_7_with_code_weights(relative):
    assert QualityScorer(dict(CODE_WEIGHTS)).score(read_stdlib(relative))[0] >= 0.7


# --- signals ------------------------------------------------------------------------------------------------


def test_every_signal_is_in_unit_interval_for_assorted_texts(prose):
    for text in [prose[0], read_stdlib("os.py"), "", "   \n\n ", "!!!", "a", "x" * 5000]:
        for name, value in compute_signals(text).items():
            assert 0.0 <= value <= 1.0, (name, text[:20], value)


def test_word_length_is_one_between_3_and_10_and_falls_to_zero_at_1_and_15():
    def wl(mean: int) -> float:
        return compute_signals(" ".join(["x" * mean] * 20))["word_length"]

    assert wl(1) == 0.0 and wl(2) == 0.5 and wl(3) == 1.0 and wl(10) == 1.0
    assert wl(12) == pytest.approx(0.6) and wl(15) == 0.0 and wl(20) == 0.0


def test_length_is_zero_at_10_words_one_at_300_and_log_scaled_between():
    def length(words: int) -> float:
        return compute_signals(" ".join(f"w{i}" for i in range(words)))["length"]

    assert length(5) == 0.0 and length(10) == 0.0 and length(300) == 1.0 and length(3000) == 1.0
    assert length(round(math.sqrt(10 * 300))) == pytest.approx(0.5, abs=0.01)  # the geometric midpoint


def test_duplicate_lines_lower_unique_lines():
    text = "\n".join(["Subscribe to our newsletter!"] * 3 + ["A different line.", ""])
    assert compute_signals(text)["unique_lines"] == 0.5  # 4 non-empty lines, 2 of them repeats


def test_alpha_words_saturates_at_80_percent():
    assert compute_signals("alpha beta gamma delta 42")["alpha_words"] == 1.0
    assert compute_signals("alpha beta 1 2")["alpha_words"] == pytest.approx(0.625)


def test_stop_words_line_punctuation_and_repetition_separate_prose_from_spam(prose):
    good, spam = compute_signals(prose[0]), compute_signals("buy now cheap pills " * 50)
    for name in ("stop_words", "line_punctuation", "repetition"):
        assert good[name] >= 0.5 and spam[name] == 0.0, name


def test_metadata_from_the_filters_feeds_language_and_non_toxic(prose):
    plain = compute_signals(prose[0])
    assert plain["language"] == 1.0 and plain["non_toxic"] == 1.0
    annotated = compute_signals(prose[0], {"language_score": 0.72, "toxicity": 0.25})
    assert annotated["language"] == 0.72 and annotated["non_toxic"] == 0.75


def test_code_signals_reward_readable_code_and_punish_minified_code():
    readable = compute_signals(read_stdlib("json/decoder.py"))
    minified = compute_signals("\n".join([";".join(f"var a{i}=f(x{i}){{return x*{i}}}" for i in range(8))] * 30))
    assert readable["code_alnum"] == 1.0 and readable["code_line_length"] == 1.0
    assert minified["code_line_length"] < 0.2


# --- weights ------------------------------------------------------------------------------------------------


def test_score_is_the_weighted_mean_of_positive_weight_signals(prose):
    text = prose[1]
    scorer = QualityScorer({"length": 3.0, "word_length": 1.0, "stop_words": 0.0})
    score, signals = scorer.score(" ".join(text.split()[:40]))
    assert score == round((3 * signals["length"] + signals["word_length"]) / 4, 4)
    assert signals["length"] < 1.0  # 40 words: the weights matter


def test_default_weights_ignore_code_signals_and_code_weights_ignore_prose_signals():
    assert DEFAULT_WEIGHTS["code_alnum"] == 0 and DEFAULT_WEIGHTS["code_line_length"] == 0
    assert CODE_WEIGHTS["stop_words"] == 0 and CODE_WEIGHTS["line_punctuation"] == 0 and CODE_WEIGHTS["language"] == 0
    assert set(DEFAULT_WEIGHTS) == set(CODE_WEIGHTS) == set(SIGNALS)


def test_unknown_weight_name_is_an_error_listing_valid_names():
    with pytest.raises(MegatronSotaError, match=r"unknown weight name\(s\) \['stopwords'\].*'stop_words'"):
        QualityScorer({"stopwords": 1.0})


def test_negative_or_all_zero_weights_are_errors():
    with pytest.raises(MegatronSotaError, match="weights >= 0"):
        QualityScorer({"length": -1.0})
    with pytest.raises(MegatronSotaError, match="at least one > 0"):
        QualityScorer({"length": 0.0})


# --- the pipeline step --------------------------------------------------------------------------------------


def test_every_document_is_yielded_with_score_and_rounded_signals(prose):
    docs = [Document(text=prose[0], id="prose"), Document(text="buy now cheap pills " * 50, id="spam"),
            Document(text="", id="empty")]
    scorer = QualityScorer()
    out = list(scorer.run(docs))
    assert [d.id for d in out] == ["prose", "spam", "empty"]
    for d in out:
        assert set(d.metadata["quality_signals"]) == set(SIGNALS)
        assert all(v == round(v, 4) for v in d.metadata["quality_signals"].values())
        assert d.metadata["quality_score"] == round(d.metadata["quality_score"], 4)
    assert out[0].metadata["quality_score"] >= 0.8 > 0.5 > out[1].metadata["quality_score"]
    assert out[0].text == prose[0]


def test_scorer_survives_dill_after_use(prose):
    scorer = QualityScorer(dict(CODE_WEIGHTS))
    before = scorer.score(read_stdlib("os.py"))
    clone = dill.loads(dill.dumps(scorer))
    assert clone.score(read_stdlib("os.py")) == before
    assert clone.weights == dict(CODE_WEIGHTS)
