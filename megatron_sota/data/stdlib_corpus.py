"""A small, license-clean, always-available JSONL corpus: the running Python's standard library.

Writes files atomically and deterministically; it must not tokenize or fetch anything remote.
"""

from __future__ import annotations

import contextlib
import json
import os
import sysconfig
import zlib
from dataclasses import dataclass

from megatron_sota.atomic_files import atomic_output
from megatron_sota.errors import MegatronSotaError

# Test suites are huge and full of deliberately odd code; site-packages is not the stdlib.
_SKIPPED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__"}
)
# crc32 buckets: fine enough for fractions down to 0.01 %.
_HASH_BUCKETS = 10_000


@dataclass(frozen=True)
class CorpusStats:
    """What write_stdlib_corpus wrote; bytes count the UTF-8 size of document texts."""

    docs: int
    bytes: int
    heldout_docs: int = 0
    heldout_bytes: int = 0
    skipped_not_utf8: int = 0
    skipped_short: int = 0


def stdlib_dir() -> str:
    """Directory of the running interpreter's pure-Python standard library."""
    return sysconfig.get_paths()["stdlib"]


def list_stdlib_sources(root: str) -> list[str]:
    """Relative POSIX paths of stdlib .py files, sorted so every run sees the same order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIPPED_DIRS]
        for name in filenames:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                found.append(rel.replace(os.sep, "/"))
    return sorted(found)


def is_heldout(rel_path: str, fraction: float) -> bool:
    """Stable split: crc32 of the path does not change across runs, machines or Python versions."""
    return zlib.crc32(rel_path.encode("utf-8")) % _HASH_BUCKETS < fraction * _HASH_BUCKETS


def _read_text(path: str) -> str | None:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def write_stdlib_corpus(
    out_path: str,
    max_files: int | None = None,
    min_chars: int = 200,
    heldout_path: str | None = None,
    heldout_fraction: float = 0.01,
    source_dir: str | None = None,
) -> CorpusStats:
    """Write one {"text": ...} line per stdlib .py file to out_path (held-out docs to heldout_path).

    max_files caps how many files become documents (both outputs together), counted in path order.
    """
    if max_files is not None and max_files < 1:
        raise MegatronSotaError(
            f"max_files: expected a positive integer or None, found {max_files}"
        )
    if not 0.0 <= heldout_fraction < 1.0:
        raise MegatronSotaError(
            f"heldout_fraction: expected a number in [0, 1), found {heldout_fraction}"
        )
    root = source_dir or stdlib_dir()
    if not os.path.isdir(root):
        raise MegatronSotaError(f"stdlib directory {root!r}: expected a directory, found none")

    counts = {"docs": 0, "bytes": 0, "heldout_docs": 0, "heldout_bytes": 0}
    skipped_not_utf8 = skipped_short = 0
    # Both files are written aside and renamed only when the whole corpus is written: no partial corpus is left.
    with contextlib.ExitStack() as stack:
        main_file = stack.enter_context(atomic_output(out_path))
        heldout_file = stack.enter_context(atomic_output(heldout_path)) if heldout_path is not None else None
        for rel in list_stdlib_sources(root):
            if max_files is not None and counts["docs"] + counts["heldout_docs"] >= max_files:
                break
            text = _read_text(os.path.join(root, rel))
            if text is None:
                skipped_not_utf8 += 1
                continue
            if len(text) < min_chars:
                skipped_short += 1
                continue
            line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
            size = len(text.encode("utf-8"))
            if heldout_file is not None and is_heldout(rel, heldout_fraction):
                heldout_file.write(line)
                counts["heldout_docs"] += 1
                counts["heldout_bytes"] += size
            else:
                main_file.write(line)
                counts["docs"] += 1
                counts["bytes"] += size

    return CorpusStats(
        skipped_not_utf8=skipped_not_utf8, skipped_short=skipped_short, **counts
    )
