"""Input files with broken records (malformed JSON, missing or non-string text, truncated .gz and .zst) and their expected counts.

The good lines come from reserved prose found in no planted corpus."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from tests.curation.corpus import write_gzip
from tests.curation.prose import ParagraphSource, reserved_paragraphs

BAD_LINES: dict[str, dict[str, int]] = {
    "bad.jsonl": {"good": 3, "malformed_json": 2, "missing_text": 1, "text_not_string": 1},
    "corrupt.jsonl.gz": {"unreadable": 1},
}


def _good_input_texts() -> list[str]:
    source = ParagraphSource(reserved_paragraphs())
    return ["\n".join(source.take_words(150)) for _ in range(BAD_LINES["bad.jsonl"]["good"])]


def write_bad_input(directory: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Write input files with broken records; return the expected counts per file name (a copy of BAD_LINES).

    bad.jsonl:
        good: lines with a string "text" (clean English prose found nowhere in build_web_corpus), ids bad-good-*;
        malformed_json: lines that are not valid JSON;
        missing_text: a JSON object without a "text" key;
        text_not_string: a JSON object whose "text" is a number.
    corrupt.jsonl.gz:
        unreadable: the whole file; a valid gzip of good lines cut short, so decompression fails before the first
        line is complete and no document can come out of it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    good = [json.dumps({"id": f"bad-good-{i}", "text": t}) for i, t in enumerate(_good_input_texts())]
    lines = [
        good[0],
        '{"id": "bad-malformed-0", "text": "an unterminated string',
        good[1],
        "this line is not json at all",
        json.dumps({"id": "bad-missing-text", "content": "The text is stored under the wrong key."}),
        json.dumps({"id": "bad-text-number", "text": 12345}),
        good[2],
    ]
    (directory / "bad.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    corrupt = directory / "corrupt.jsonl.gz"
    write_gzip(corrupt, "".join(line + "\n" for line in good).encode("utf-8"))
    # keep only the header and a few compressed bytes: less than the first line decodes
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    return {name: dict(counts) for name, counts in BAD_LINES.items()}




def _flushed_per_line(lines: list[bytes], suffix: str) -> tuple[bytes, list[int]]:
    """One gzip member or zstd frame whose blocks end with the lines; the compressed offset after each line."""
    import zlib

    import zstandard

    offsets = []
    if suffix == ".gz":
        packer = zlib.compressobj(wbits=31)  # a gzip member
        data = b""
        for line in lines:
            data += packer.compress(line) + packer.flush(zlib.Z_FULL_FLUSH)
            offsets.append(len(data))
        return data + packer.flush(), offsets
    # At the fastest level the random text is stored in raw blocks, which a decoder hands out as they arrive:
    # a cut inside one shows as a half-written line, as a cut inside a deflate block does.
    packer = zstandard.ZstdCompressor(level=-50).compressobj()
    data = b""
    for line in lines:
        data += packer.compress(line) + packer.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        offsets.append(len(data))
    return data + packer.flush(), offsets


CUTS = ("line boundary", "mid-block")


def write_cut_short(path: Path, documents: int = 8, cut: str = "mid-block") -> tuple[int, int]:
    """`documents` JSON lines in two gzip members or zstd frames (by the suffix), the second cut short.

    The second member is cut where its second line ends (`line boundary`: what decompresses is whole lines,
    so only the missing end of the member tells) or half-way through that line's block (`mid-block`: the
    last line decompresses half-written). Returns (lines in the first member, whole lines before the cut):
    a reader keeps at least the first and at most the second, and must say that the file ended early
    (zstandard's stream_reader ends quietly at the cut).
    """
    import gzip

    import zstandard

    if cut not in CUTS:
        raise ValueError(f"cut: expected one of {CUTS}, found {cut!r}")
    letters = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,;"
    lines = [(json.dumps({"id": f"cut-{i}", "text": "".join(random.Random(i).choices(letters, k=700))}) + "\n").encode()
             for i in range(documents)]
    first = documents // 2
    suffix = ".gz" if path.name.endswith(".gz") else ".zst"
    head = b"".join(lines[:first])
    head = gzip.compress(head, mtime=0) if suffix == ".gz" else zstandard.ZstdCompressor().compress(head)
    tail, offsets = _flushed_per_line(lines[first:], suffix)
    end = offsets[1] if cut == "line boundary" else (offsets[0] + offsets[1]) // 2
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + tail[:end])
    return first, first + (2 if cut == "line boundary" else 1)
