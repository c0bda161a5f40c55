"""What is in a .bin/.idx pair, and whether its index is consistent: for tools/inspect_data.py.

Reads shards only. Every finding names the file and what was expected and found; unlike
shard_checks (which stops a training run at the first problem) it collects them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy
from megatron.core.datasets.indexed_dataset import DType, _IndexReader

from megatron_sota.data.shard_checks import check_index_file, id_range
from megatron_sota.errors import MegatronSotaError

@dataclass
class ShardReport:
    prefix: str
    dtype: str = "?"
    documents: int = 0
    sequences: int = 0
    tokens: int = 0
    bin_bytes: int = 0
    min_id: int | None = None
    max_id: int | None = None
    document_lengths: numpy.ndarray | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        lines = [
            f"{self.prefix}: {self.documents:,} documents, {self.sequences:,} sequences, "
            f"{self.tokens:,} tokens of {self.dtype} ({self.bin_bytes / 2**20:,.1f} MiB .bin)"
        ]
        if self.document_lengths is not None and len(self.document_lengths):
            q = numpy.percentile(self.document_lengths, [50, 90, 99]).astype(int)
            lines.append(
                f"  tokens per document: mean {self.document_lengths.mean():,.0f}, median {q[0]:,}, "
                f"p90 {q[1]:,}, p99 {q[2]:,}, max {int(self.document_lengths.max()):,}"
            )
        if self.max_id is not None:
            lines.append(f"  token ids: {self.min_id} .. {self.max_id}")
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        lines.append("  index and data are consistent" if self.ok else f"  {len(self.problems)} problem(s)")
        return "\n".join(lines)


def _check_index(report: ShardReport, index: _IndexReader, idx_path: str) -> None:
    lengths = index.sequence_lengths.astype(numpy.int64)
    pointers = index.sequence_pointers.astype(numpy.int64)
    itemsize = DType.size(index.dtype)
    expected = numpy.concatenate([[0], numpy.cumsum(lengths)[:-1]]) * itemsize if len(lengths) else lengths
    bad = numpy.nonzero(pointers != expected)[0]
    if len(bad):
        i = int(bad[0])
        report.problems.append(
            f"{idx_path}: sequence {i} should start at byte {int(expected[i])} (sum of earlier "
            f"lengths), found pointer {int(pointers[i])} ({len(bad)} pointers wrong)"
        )
    docs = index.document_indices.astype(numpy.int64)
    if len(docs) == 0 or docs[0] != 0 or docs[-1] != len(lengths) or numpy.any(numpy.diff(docs) < 0):
        report.problems.append(
            f"{idx_path}: document indices should rise from 0 to {len(lengths)} (the sequence "
            f"count), found {docs[:3].tolist()}..{docs[-3:].tolist()}"
        )
    if numpy.any(lengths < 0):
        report.problems.append(f"{idx_path}: negative sequence lengths")


def _scan_ids(report: ShardReport, bin_path: str, dtype: type, vocab_size: int | None) -> None:
    report.min_id, report.max_id = id_range(bin_path, dtype, report.tokens)
    if vocab_size is not None and report.max_id >= vocab_size:
        report.problems.append(
            f"{bin_path}: expected token ids below the tokenizer's vocabulary size {vocab_size}, "
            f"found id {report.max_id}"
        )
    if vocab_size is not None and DType.optimal_dtype(vocab_size) != dtype:
        report.problems.append(
            f"{bin_path}: expected dtype {numpy.dtype(DType.optimal_dtype(vocab_size)).name} for a "
            f"vocabulary of {vocab_size}, found {numpy.dtype(dtype).name}"
        )


def inspect_shard(prefix: str, vocab_size: int | None = None, scan_ids: bool = True) -> ShardReport:
    """Sizes, counts and consistency of <prefix>.bin/.idx; problems are listed, not raised."""
    report = ShardReport(prefix)
    bin_path, idx_path = f"{prefix}.bin", f"{prefix}.idx"
    for path in (bin_path, idx_path):
        if not os.path.isfile(path):
            report.problems.append(f"{path}: expected a file, found none")
    if report.problems:
        return report
    try:
        check_index_file(idx_path)
        index = _IndexReader(idx_path, multimodal=False)
    except MegatronSotaError as err:
        report.problems.append(str(err))
        return report
    except (AssertionError, ValueError, KeyError, OSError) as err:
        report.problems.append(f"{idx_path}: unreadable index ({type(err).__name__}: {err})")
        return report
    report.dtype = numpy.dtype(index.dtype).name
    report.sequences = len(index.sequence_lengths)
    report.documents = len(index.document_indices) - 1
    report.tokens = int(index.sequence_lengths.sum(dtype=numpy.int64))
    report.bin_bytes = os.path.getsize(bin_path)
    _check_index(report, index, idx_path)
    expected_bytes = report.tokens * DType.size(index.dtype)
    if report.bin_bytes != expected_bytes:
        report.problems.append(
            f"{bin_path}: expected {expected_bytes:,} bytes ({report.tokens:,} tokens of "
            f"{report.dtype} per the .idx), found {report.bin_bytes:,}"
        )
    elif scan_ids and report.tokens:
        _scan_ids(report, bin_path, index.dtype, vocab_size)
    if not report.problems:
        cumulative = numpy.concatenate([[0], numpy.cumsum(index.sequence_lengths, dtype=numpy.int64)])
        report.document_lengths = numpy.diff(cumulative[index.document_indices])
    return report
