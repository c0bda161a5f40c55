"""The web pipeline on the planted corpus: each filter drops what it should, and the report's counts add up."""

from __future__ import annotations

import filecmp
import gzip
import json
from collections import Counter

import pytest

from megatron_sota.data.encode_worker import TokenizerSpec
from megatron_sota.data.preprocess import PreprocessOptions, preprocess
from tests.curation.corpus import (
    PLANTED_CARDS,
    PLANTED_EMAILS,
    PLANTED_IPS,
    PLANTED_NOT_A_CARD,
    PLANTED_PHONES,
)
from tests.curation.runs import read_documents

pytestmark = pytest.mark.timeout(600)


def _ids(records: list[dict]) -> set[str]:
    return {r["id"] for r in records}


def _fates(web_run) -> dict[str, str]:
    """Document id -> "keep" or the rejected/<filter> folder it ended in (each id exactly once)."""
    fates = {}
    for record in read_documents(web_run.output / "documents"):
        fates[record["id"]] = "keep"
    for folder in sorted((web_run.output / "rejected").iterdir()):
        for record in read_documents(folder):
            assert record["id"] not in fates, f"{record['id']} is both {fates[record['id']]} and {folder.name}"
            fates[record["id"]] = folder.name
    return fates


def test_every_planted_document_meets_its_expected_fate(web_run):
    fates = _fates(web_run)
    assert set(fates) == {d.id for d in web_run.docs}, "a document was lost or invented"
    duplicated = {d.group for d in web_run.docs if d.kind in ("exact_dup", "near_dup_high")}
    for doc in web_run.docs:
        if doc.kind in ("exact_dup", "near_dup_high") or doc.id in duplicated:
            continue  # which copy survives is the dedup's choice: checked per group below
        assert fates[doc.id] == doc.expect, f"{doc.kind} {doc.id}: expected {doc.expect}, found {fates[doc.id]}"


@pytest.mark.parametrize("kind, stage", [("exact_dup", "exact_dedup"), ("near_dup_high", "minhash")])
def test_duplicate_groups_keep_exactly_one_copy(web_run, kind, stage):
    fates = _fates(web_run)
    groups = [(d.group, d.id) for d in web_run.docs if d.kind == kind]
    assert groups
    for original, copy in groups:
        assert sorted([fates[original], fates[copy]]) == sorted(["keep", stage]), (original, copy)


def test_near_duplicates_below_the_threshold_are_both_kept(web_run):
    fates = _fates(web_run)
    threshold = web_run.report["minhash"]["implied_threshold"]
    low = [d for d in web_run.docs if d.kind == "near_dup_low"]
    high = [d for d in web_run.docs if d.kind == "near_dup_high"]
    assert low and max(d.jaccard for d in low) < threshold < min(d.jaccard for d in high)
    for doc in low:
        assert fates[doc.id] == fates[doc.group] == "keep"


def test_report_counts_add_up_and_match_the_files(web_run, stdlib_shards):
    report = web_run.report
    tokenizer = TokenizerSpec("SentencePieceTokenizer", model=stdlib_shards.tokenizer_model).build()
    # Input measured independently: every planted record, tokenized here.
    assert report["input"]["documents"] == len(web_run.docs)
    assert report["input"]["tokens"] == sum(len(tokenizer.tokenize(d.text)) for d in web_run.docs)
    for what in ("documents", "tokens"):
        dropped = sum(row[f"dropped_{what}"] for row in report["filters"])
        assert report["input"][what] == report["kept"][what] + dropped
    # Each row's dropped documents are exactly the documents in its rejected/ folder.
    for row in report["filters"]:
        on_disk = read_documents(web_run.output / "rejected" / row["filter"])
        assert row["dropped_documents"] == len(on_disk), row["filter"]
        assert row["dropped_tokens"] == sum(r["metadata"]["tokens"] for r in on_disk), row["filter"]
    assert report["kept"]["documents"] == len(read_documents(web_run.output / "documents"))
    assert [row["filter"] for row in report["filters"]] == [
        "length", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "toxicity",
        "exact_dedup", "minhash"]


def test_rejected_documents_say_why(web_run):
    for folder in ("length", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb", "toxicity"):
        records = read_documents(web_run.output / "rejected" / folder)
        assert records and all(r["metadata"].get("filter_reason") for r in records), folder
    reasons = web_run.report["filters"][0]["reasons"]
    assert sum(reasons.values()) == web_run.report["filters"][0]["dropped_documents"]


def test_pii_is_redacted_with_counts(web_run):
    text = "\n".join(r["text"] for r in read_documents(web_run.output / "documents"))
    for value in (*PLANTED_EMAILS, *PLANTED_IPS, *PLANTED_PHONES, *PLANTED_CARDS):
        assert value not in text
    assert PLANTED_NOT_A_CARD in text, "a number failing the Luhn check is not a card"
    planted = [d for d in web_run.docs if d.kind == "pii"]
    expected = Counter()
    for doc in planted:
        expected["email"] += sum(doc.text.count(v) for v in PLANTED_EMAILS)
        expected["ip_address"] += sum(doc.text.count(v) for v in PLANTED_IPS)
        expected["phone"] += sum(doc.text.count(v) for v in PLANTED_PHONES)
        expected["card_number"] += sum(doc.text.count(v) for v in PLANTED_CARDS)
    assert web_run.report["pii_redactions"] == dict(expected)
    for placeholder in ("<EMAIL>", "<IP_ADDRESS>", "<PHONE>", "<CARD_NUMBER>"):
        assert placeholder in text


def test_kept_documents_carry_language_and_quality_and_the_high_quality_blend_is_their_top(web_run):
    kept = read_documents(web_run.output / "documents")
    for record in kept:
        assert record["metadata"]["language"] == "en" and record["metadata"]["language_score"] >= 0.65
        assert 0.0 <= record["metadata"]["quality_score"] <= 1.0
    threshold = web_run.report["high_quality"]["threshold"]
    assert threshold == 0.7
    expected = {r["id"] for r in kept if r["metadata"]["quality_score"] >= threshold}
    assert _ids(read_documents(web_run.output / "high_quality")) == expected
    assert web_run.report["high_quality"]["documents"] == len(expected)


def test_tokenized_output_is_byte_identical_to_preprocess_data(web_run, stdlib_shards, tmp_path):
    documents = sorted(str(p) for p in (web_run.output / "documents").glob("*.jsonl.gz"))
    preprocess(PreprocessOptions(
        inputs=tuple(documents), output_prefix=str(tmp_path / "direct"),
        tokenizer=TokenizerSpec("SentencePieceTokenizer", model=stdlib_shards.tokenizer_model),
        append_eod=True, progress=False))
    curated = web_run.output / "tokenized" / "curated_text_document"
    for ext in (".bin", ".idx"):
        assert filecmp.cmp(f"{curated}{ext}", tmp_path / f"direct_text_document{ext}", shallow=False), ext
    assert web_run.report["tokenized"]["documents"] == web_run.report["kept"]["documents"]


def test_report_is_printed_and_drawn(web_run):
    assert "implied Jaccard threshold 0.719" in web_run.stdout
    assert "near-duplicates above Jaccard ~0.719" in web_run.stdout
    for row in web_run.report["filters"]:
        assert row["filter"] in (web_run.output / "report.txt").read_text()
    assert (web_run.output / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_output_file_is_left_staged(web_run):
    assert not list(web_run.output.rglob(".incomplete/*.jsonl.gz"))
    with gzip.open(next((web_run.output / "documents").glob("*.jsonl.gz")), "rt") as handle:
        json.loads(handle.readline())
