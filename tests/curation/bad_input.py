"""Input files with broken records (malformed JSON, missing or non-string text, truncated .gz and .zst) and their expected counts.

The good lines come from reserved prose found in no planted corpus."""

from __future__ import annotations

import json
import os
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




def write_cut_short(path: Path, documents: int = 8) -> int:
    """`documents` JSON lines in two gzip members or zstd frames (by the suffix), the second cut in half.

    Returns how many documents the first member holds: a reader keeps at least those and loses some of the
    rest, and must say that the file ended early (zstandard's stream_reader ends quietly at the cut).
    """
    import gzip

    import zstandard

    lines = [json.dumps({"id": f"cut-{i}", "text": f"Document {i} of a file cut short. " * 20}) + "\n" for i in range(documents)]
    first = documents // 2
    halves = ["".join(lines[:first]).encode(), "".join(lines[first:]).encode()]
    if path.name.endswith(".gz"):
        members = [gzip.compress(h, mtime=0) for h in halves]
    else:
        members = [zstandard.ZstdCompressor().compress(h) for h in halves]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(members[0] + members[1][: len(members[1]) // 2])
    return first
