"""Pre-training checks of indexed shards: files present, Megatron index header, ids in the vocab.

Reads shards only (never modifies them); raises MegatronSotaError, not megatron-core's asserts.
"""

from __future__ import annotations

import os
import struct
from typing import Sequence

import numpy
from megatron.core.datasets.indexed_dataset import DType, _IndexReader

from megatron_sota.errors import MegatronSotaError

INDEX_MAGIC = b"MMIDIDX\x00\x00"
# magic, version, dtype code, sequence count, document count: megatron-core's version-1 index header.
_HEADER = struct.Struct("<9sQBQQ")
_DTYPE_CODES = {member.value for member in DType}
# Elements per scan step: 64 Mi tokens keeps memory bounded on multi-GB shards.
_SCAN_CHUNK = 64 * 1024 * 1024


def _require_file(path: str, prefix: str, position: int, config_key: str) -> None:
    if os.path.isfile(path):
        return
    hint = ""
    if prefix.endswith((".bin", ".idx")):
        hint = " (list prefixes without the .bin/.idx suffix)"
    raise MegatronSotaError(
        f"{config_key}[{position}] = {prefix!r}: expected the file {path}, found no such file"
        f"{hint}; run tools/preprocess_data.py to create the .bin/.idx pair"
    )


def check_index_file(idx_path: str) -> None:
    """Refuses an .idx whose header or size does not describe a whole megatron-core index (version 1).

    Run before megatron-core opens it: its reader fails half-way on such a file, with a bare assert or
    numpy error, and the half-built IndexedDataset then prints a second traceback when collected.
    """
    with open(idx_path, "rb") as f:
        header = f.read(_HEADER.size)
    found = header[: len(INDEX_MAGIC)]
    if found != INDEX_MAGIC:
        raise MegatronSotaError(f"{idx_path}: expected header {INDEX_MAGIC!r} (a megatron-core index), found {found!r}")
    redo = "copy it again, or re-run tools/preprocess_data.py to write the .bin/.idx pair anew"
    if len(header) < _HEADER.size:
        raise MegatronSotaError(
            f"{idx_path}: expected a {_HEADER.size}-byte index header, found a file of {len(header)} bytes; "
            f"the index is truncated; {redo}"
        )
    _, version, code, sequences, documents = _HEADER.unpack(header)
    if version != 1:
        raise MegatronSotaError(f"{idx_path}: expected index version 1, found {version}; the index is damaged; {redo}")
    if code not in _DTYPE_CODES:
        raise MegatronSotaError(
            f"{idx_path}: expected a token dtype code in {sorted(_DTYPE_CODES)}, found {code}; the index is damaged; {redo}"
        )
    # int32 length + int64 pointer per sequence, int64 per document boundary (megatron-core's layout).
    expected = _HEADER.size + 12 * sequences + 8 * documents
    size = os.path.getsize(idx_path)
    if size < expected:
        raise MegatronSotaError(
            f"{idx_path}: expected {expected:,} bytes ({sequences:,} sequences and {documents:,} document "
            f"boundaries, as its header says), found {size:,} bytes; the index is truncated; {redo}"
        )


def _open_index(idx_path: str) -> _IndexReader:
    check_index_file(idx_path)
    try:
        index = _IndexReader(idx_path, multimodal=False)
    except (AssertionError, ValueError, KeyError, OSError) as err:
        # megatron-core reports damaged indices with bare asserts; say which file and why.
        raise MegatronSotaError(
            f"{idx_path}: expected a readable megatron-core index (version 1), found a damaged "
            f"or truncated file ({type(err).__name__}: {err})"
        ) from err
    if len(index.document_indices) == 0 or index.document_indices[-1] != len(index.sequence_lengths):
        raise MegatronSotaError(
            f"{idx_path}: expected document boundaries ending at the sequence count "
            f"{len(index.sequence_lengths)}, found {index.document_indices[-1:].tolist()}; the index is damaged"
        )
    return index


def id_range(bin_path: str, dtype: type, count: int) -> tuple[int, int]:
    """(lowest, highest) token id of a .bin, scanned in bounded chunks."""
    tokens = numpy.memmap(bin_path, dtype=dtype, mode="r", shape=(count,))
    lows, highs = [], []
    for start in range(0, count, _SCAN_CHUNK):
        chunk = tokens[start : start + _SCAN_CHUNK]
        lows.append(int(chunk.min()))
        highs.append(int(chunk.max()))
    del tokens  # release the mapping before the caller may rename or delete the file
    return min(lows), max(highs)


def index_summary(
    prefix: str, position: int = 0, config_key: str = "data.paths"
) -> tuple[type, int]:
    """(token dtype, token count) of a <prefix>.bin/.idx pair whose sizes agree; reads no tokens."""
    bin_path, idx_path = f"{prefix}.bin", f"{prefix}.idx"
    _require_file(bin_path, prefix, position, config_key)
    _require_file(idx_path, prefix, position, config_key)
    index = _open_index(idx_path)
    dtype = index.dtype
    count = int(index.sequence_lengths.sum(dtype=numpy.int64))
    del index
    expected_bytes = count * DType.size(dtype)
    found_bytes = os.path.getsize(bin_path)
    if found_bytes != expected_bytes:
        raise MegatronSotaError(
            f"{bin_path}: expected {expected_bytes} bytes ({count} tokens of "
            f"{numpy.dtype(dtype).name} per {idx_path}), found {found_bytes} bytes; the shard is "
            f"truncated or its .idx belongs to another .bin"
        )
    return dtype, count


def check_shard(
    prefix: str, vocab_size: int, position: int = 0, config_key: str = "data.paths"
) -> int:
    """Validate one <prefix>.bin/.idx pair and return its number of tokens."""
    bin_path = f"{prefix}.bin"
    dtype, count = index_summary(prefix, position, config_key)
    if count == 0:
        raise MegatronSotaError(f"{bin_path}: expected at least one token, found an empty shard")

    low, high = id_range(bin_path, dtype, count)
    if high >= vocab_size:
        raise MegatronSotaError(
            f"tokenizer vocabulary has {vocab_size} tokens but {bin_path} contains token id "
            f"{high}; use the tokenizer the data was preprocessed with"
        )
    if low < 0:
        raise MegatronSotaError(
            f"{bin_path}: expected token ids >= 0, found {low}; the shard is corrupt"
        )
    return count


def check_shards(
    prefixes: Sequence[str], vocab_size: int, config_key: str = "data.paths"
) -> list[int]:
    """Validate every shard before training; returns tokens per prefix (e.g. for blend weights)."""
    if vocab_size < 1:
        raise MegatronSotaError(
            f"tokenizer vocab_size: expected a positive integer, found {vocab_size}"
        )
    return [
        check_shard(prefix, vocab_size, position, config_key)
        for position, prefix in enumerate(prefixes)
    ]
