"""Concatenate indexed datasets (.bin/.idx prefixes) into one, in order, through megatron-core.

Streams the token data; writes under temporary names and renames, so a crash leaves no pair
that looks complete. It must not tokenize or change tokens.
"""

from __future__ import annotations

import os
from typing import Sequence

from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder, _IndexReader

from megatron_sota.data.shard_checks import index_summary
from megatron_sota.errors import MegatronSotaError


def prefixes_in_directory(directory: str) -> list[str]:
    """Every <prefix> in `directory` with both .bin and .idx, sorted (Megatron-LM's order)."""
    if not os.path.isdir(directory):
        raise MegatronSotaError(f"--input {directory!r}: expected a directory, found none")
    names = os.listdir(directory)
    prefixes = sorted({os.path.splitext(n)[0] for n in names if n.endswith((".bin", ".idx"))})
    for prefix in prefixes:
        for ext in (".bin", ".idx"):
            if prefix + ext not in names:
                raise MegatronSotaError(
                    f"{os.path.join(directory, prefix)}: expected both .bin and .idx, found no {ext}"
                )
    if not prefixes:
        raise MegatronSotaError(f"--input {directory!r}: expected .bin/.idx pairs, found none")
    return [os.path.join(directory, p) for p in prefixes]


def publish(temp_prefix: str, final_prefix: str) -> None:
    """Rename a finished temp pair onto the final names.

    The old .idx goes first: a crash in between leaves a .bin without .idx (reported by the
    shard checks), never a new .bin paired with a stale .idx. Not atomic_files: megatron-core's
    builder writes both files by name, and the two renames must happen in this order.
    """
    if os.path.exists(final_prefix + ".idx"):
        os.remove(final_prefix + ".idx")
    os.replace(temp_prefix + ".bin", final_prefix + ".bin")
    os.replace(temp_prefix + ".idx", final_prefix + ".idx")


def remove_pair(prefix: str) -> None:
    """Delete <prefix>.bin/.idx where they exist (temporary pairs of an unfinished write)."""
    for ext in (".bin", ".idx"):
        if os.path.exists(prefix + ext):
            os.remove(prefix + ext)


def merge_datasets(prefixes: Sequence[str], output_prefix: str) -> tuple[int, int]:
    """Write output_prefix.bin/.idx = prefixes concatenated; returns (documents, tokens)."""
    if not prefixes:
        raise MegatronSotaError("merge inputs: expected at least one prefix, found none")
    dtypes = {}
    for position, prefix in enumerate(prefixes):
        dtypes[prefix] = index_summary(prefix, position, "--input")[0]
    first_dtype = dtypes[prefixes[0]]
    for prefix, dtype in dtypes.items():
        if dtype != first_dtype:
            raise MegatronSotaError(
                f"{prefix}.idx: expected token dtype {first_dtype.__name__} like "
                f"{prefixes[0]}.idx, found {dtype.__name__}"
            )
    parent = os.path.dirname(os.path.abspath(output_prefix))
    os.makedirs(parent, exist_ok=True)
    temp = f"{output_prefix}.tmp-{os.getpid()}"
    builder = IndexedDatasetBuilder(temp + ".bin", dtype=first_dtype)
    try:
        for prefix in prefixes:
            builder.add_index(prefix)
        builder.finalize(temp + ".idx")
        publish(temp, output_prefix)
    finally:
        builder.data_file.close()
        remove_pair(temp)
    index = _IndexReader(output_prefix + ".idx", multimodal=False)
    return len(index.document_indices) - 1, int(index.sequence_lengths.sum())
