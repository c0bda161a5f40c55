"""Specification of tools/inspect_data.py and tools/merge_datasets.py on real and damaged shards."""

from __future__ import annotations

import gc
import pathlib
import shutil
import struct
import sys

import pytest
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

from megatron_sota.data.shard_report import inspect_shard
from tests.tool_runner import run_tool

DOCUMENTS = [[5, 6, 7, 1], [8, 1], [9, 9, 9, 9, 9, 1]]


def _write(prefix: pathlib.Path, documents=DOCUMENTS, vocab_size: int = 50) -> str:
    from megatron.core.datasets.indexed_dataset import DType

    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=DType.optimal_dtype(vocab_size))
    for doc in documents:
        builder.add_document(doc, [len(doc)])
    builder.finalize(f"{prefix}.idx")
    return str(prefix)


def _copy(prefix: str, to: pathlib.Path) -> str:
    for ext in (".bin", ".idx"):
        shutil.copy(prefix + ext, f"{to}{ext}")
    return str(to)


def test_a_consistent_shard_is_described(tmp_path):
    report = inspect_shard(_write(tmp_path / "ok"), vocab_size=50)
    assert report.ok, report.problems
    assert (report.documents, report.sequences, report.tokens) == (3, 3, 12)
    assert (report.min_id, report.max_id, report.dtype) == (1, 9, "uint16")
    assert report.document_lengths.tolist() == [4, 2, 6]


def test_a_wrong_sequence_pointer_is_found(tmp_path):
    prefix = _copy(_write(tmp_path / "ok"), tmp_path / "bad")
    raw = bytearray(pathlib.Path(prefix + ".idx").read_bytes())
    # Header: magic(9) version(8) dtype(1) sequences(8) documents(8), then int32 lengths, int64 pointers.
    sequences = struct.unpack("<Q", raw[18:26])[0]
    pointer_1 = 34 + 4 * sequences + 8
    raw[pointer_1 : pointer_1 + 8] = struct.pack("<q", 3)
    pathlib.Path(prefix + ".idx").write_bytes(bytes(raw))
    report = inspect_shard(prefix)
    assert not report.ok
    assert "sequence 1 should start at byte 8" in report.problems[0] and "found pointer 3" in report.problems[0]


def test_a_truncated_bin_is_found(tmp_path):
    prefix = _copy(_write(tmp_path / "ok"), tmp_path / "short")
    pathlib.Path(prefix + ".bin").write_bytes(pathlib.Path(prefix + ".bin").read_bytes()[:10])
    report = inspect_shard(prefix)
    assert report.problems == [
        f"{prefix}.bin: expected 24 bytes (12 tokens of uint16 per the .idx), found 10"
    ]


def test_ids_beyond_the_vocabulary_and_a_wrong_dtype_are_found(tmp_path):
    prefix = _write(tmp_path / "ok")
    report = inspect_shard(prefix, vocab_size=9)
    assert any("below the tokenizer's vocabulary size 9, found id 9" in p for p in report.problems)
    report = inspect_shard(prefix, vocab_size=100_000)
    assert any("expected dtype int32 for a vocabulary of 100000, found uint16" in p for p in report.problems)


def test_a_missing_index_and_a_foreign_file_are_reported(tmp_path):
    prefix = _write(tmp_path / "ok")
    pathlib.Path(prefix + ".idx").write_bytes(b"not an index at all")
    assert "expected header" in inspect_shard(prefix).problems[0]
    pathlib.Path(prefix + ".idx").unlink()
    assert inspect_shard(prefix).problems == [f"{prefix}.idx: expected a file, found none"]


def test_inspect_cli_shows_a_sample_and_fails_on_a_damaged_pair(tmp_path, capsys):
    prefix = _write(tmp_path / "ok")
    args = [prefix + ".bin", "--sample", "2", "--tokenizer-type", "NullTokenizer", "--vocab-size", "50"]
    code, out, err = run_tool("inspect_data", args, capsys)
    assert code == 0, err
    assert "3 documents, 3 sequences, 12 tokens of uint16" in out
    assert "document 2: 1 sequence(s), 6 tokens\n9 9 9 9 9 1" in out
    pathlib.Path(prefix + ".bin").write_bytes(b"\x00")
    code, out, _ = run_tool("inspect_data", [prefix], capsys)
    assert code == 1 and "PROBLEM" in out


def test_merge_cli_merges_a_directory_in_name_order(tmp_path, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    _write(shards / "b", [[3, 1]])
    _write(shards / "a", [[2, 2, 1]])
    args = ["--input", str(shards), "--output-prefix", str(tmp_path / "merged")]
    code, out, err = run_tool("merge_datasets", args, capsys)
    assert code == 0, err
    assert "2 documents, 5 tokens" in out
    expected = _write(tmp_path / "expected", [[2, 2, 1], [3, 1]])
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"merged{ext}").read_bytes() == pathlib.Path(expected + ext).read_bytes()


@pytest.mark.parametrize("leftover", [".bin", ".idx"])
def test_merge_cli_refuses_a_half_pair(tmp_path, leftover, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    _write(shards / "a")
    (shards / f"b{leftover}").write_bytes(b"")
    args = ["--input", str(shards), "--output-prefix", str(tmp_path / "merged")]
    code, _, err = run_tool("merge_datasets", args, capsys)
    assert code == 1
    assert "expected both .bin and .idx" in err
    assert not (tmp_path / "merged.bin").exists()


# A 3-document index is 34 header bytes + 3 * 12 (lengths, pointers) + 4 * 8 (document boundaries) = 102 bytes.
@pytest.mark.parametrize("keep, found", [
    (20, "expected a 34-byte index header, found a file of 20 bytes; the index is truncated"),
    (60, "expected 102 bytes (3 sequences and 4 document boundaries, as its header says), found 60 bytes; "
         "the index is truncated"),
    (101, "expected 102 bytes (3 sequences and 4 document boundaries, as its header says), found 101 bytes"),
])
def test_a_truncated_index_is_named_by_inspect_and_merge_without_a_second_traceback(tmp_path, capsys, monkeypatch,
                                                                                     keep, found):
    good = _write(tmp_path / "good")
    cut = _copy(good, tmp_path / "cut")
    pathlib.Path(cut + ".idx").write_bytes(pathlib.Path(good + ".idx").read_bytes()[:keep])
    # megatron-core's IndexedDataset, half-built on such a file, prints "Exception ignored in __del__"
    # through sys.unraisablehook when collected: the check must come before it is ever constructed.
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    problems = inspect_shard(cut).problems
    assert len(problems) == 1 and problems[0].startswith(f"{cut}.idx: {found}"), problems
    code, out, _ = run_tool("inspect_data", [cut], capsys)
    assert code == 1 and f"PROBLEM: {cut}.idx: {found}" in out
    code, _, err = run_tool("merge_datasets", ["--input", good, cut, "--output-prefix", str(tmp_path / "merged")], capsys)
    assert code == 1 and f"{cut}.idx: {found}" in err and "copy it again" in err
    assert not (tmp_path / "merged.bin").exists()
    gc.collect()
    assert [str(u.exc_value) for u in unraisable] == []


def test_merge_refuses_an_index_whose_document_boundaries_do_not_end_at_its_sequence_count(tmp_path, capsys):
    bad = _write(tmp_path / "bad")
    index = pathlib.Path(bad + ".idx").read_bytes()
    pathlib.Path(bad + ".idx").write_bytes(index[:-8] + struct.pack("<q", 7))  # the last boundary: 7, not 3
    code, _, err = run_tool("merge_datasets", ["--input", bad, "--output-prefix", str(tmp_path / "merged")], capsys)
    assert code == 1 and f"{bad}.idx: expected document boundaries ending at the sequence count 3, found [7]" in err
