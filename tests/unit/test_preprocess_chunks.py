"""How preprocessing cuts plain JSONL into worker chunks: byte ranges of whole lines (the reading
process sends no text), numbered by line, shrinking near the end so the workers finish together.

Expected ranges and line numbers are computed here from the file's bytes, independently of the reader.
"""

from __future__ import annotations

import json
import pathlib
import random

import pytest

from megatron_sota.data import readers
from megatron_sota.data.readers import Piece, expand_inputs, iter_payloads, read_chunks


def _write_lines(path: pathlib.Path, count: int, trailing_newline: bool) -> bytes:
    rng = random.Random(7)
    lines = [json.dumps({"text": "y" * rng.randrange(0, 3000)}).encode() for _ in range(count)]
    data = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_chunks_are_ranges_of_whole_lines_numbered_by_line_and_tiling_the_file(tmp_path, trailing_newline):
    path = tmp_path / "lines.jsonl"
    data = _write_lines(path, 900, trailing_newline)
    chunk_bytes = 64 * 1024
    chunks = list(read_chunks(Piece(expand_inputs(str(path))[0]), ("text",), chunk_bytes))
    assert all(chunk.payloads == [] for chunk in chunks)  # the text stays in the file
    starts = [c.byte_range[0] for c in chunks]
    stops = [c.byte_range[1] for c in chunks]
    assert starts[0] == 0 and stops[-1] == len(data) and starts[1:] == stops[:-1]
    assert all(data[stop - 1] == ord("\n") for stop in stops[:-1])
    assert [c.first_record for c in chunks] == [data[:start].count(b"\n") + 1 for start in starts]
    assert sum(c.disk_bytes for c in chunks) == len(data)
    got = [payload for chunk in chunks for _, payload in iter_payloads(chunk)]
    assert got == data.rstrip(b"\n").split(b"\n")


def test_chunks_shrink_towards_the_end_of_the_input(tmp_path):
    path = tmp_path / "lines.jsonl"
    data = _write_lines(path, 2000, True)
    chunk_bytes = 256 * 1024
    sizes = [c.disk_bytes for c in read_chunks(Piece(expand_inputs(str(path))[0]), ("text",), chunk_bytes)]
    # A chunk holds whole lines: it may pass its target by one line (< 3 kB here).
    line = 3100
    for size, left in zip(sizes, [len(data) - sum(sizes[:i]) for i in range(len(sizes))]):
        target = min(chunk_bytes, max(left // readers.TAIL_CHUNKS, readers.TAIL_MIN_CHUNK_BYTES))
        assert size <= max(target, 0) + line or size == left
    assert sizes[0] >= chunk_bytes
    # The last chunks are a small share of the input, not whole chunk_bytes.
    assert max(sizes[-3:]) < chunk_bytes / 2
    assert sizes[-1] <= readers.TAIL_MIN_CHUNK_BYTES + line
