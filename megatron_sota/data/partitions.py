"""Partitions of a preprocessing run: contiguous slices of the input, each finished on its own.

A finished partition is kept across interruptions, so a re-run resumes instead of starting
over. Decides what goes where and what is reusable; it must not tokenize or merge.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Sequence

from megatron_sota.atomic_files import write_json
from megatron_sota.data.readers import InputFile, Piece

MANIFEST = "manifest.json"


def plan_partitions(files: Sequence[InputFile], count: int) -> list[list[Piece]]:
    """Cut the concatenated input into `count` slices of about equal bytes, in order.

    Plain JSONL files are cut at byte offsets (a line belongs to the slice holding its first
    byte); compressed, parquet and text files stay whole, so there may be fewer slices.
    """
    total = sum(f.size for f in files)
    bounds = [total * k // count for k in range(1, count)]
    slices: list[list[Piece]] = [[] for _ in range(count)]
    offset = 0
    for file in files:
        k = bisect.bisect_right(bounds, offset)
        if not file.splittable:
            slices[k].append(Piece(file))
        else:
            start = 0
            for bound in bounds[k:]:
                if bound >= offset + file.size:
                    break
                slices[k].append(Piece(file, start, bound - offset))
                start = bound - offset
                k += 1
            slices[k].append(Piece(file, start, None))
        offset += file.size
    return [s for s in slices if s]


def piece_bytes(piece: Piece) -> int:
    end = piece.file.size if piece.end is None else piece.end
    return end - piece.start


def _describe(partitions: Sequence[Sequence[Piece]]) -> list[list[dict]]:
    return [
        [
            {
                "path": os.path.abspath(p.file.path),
                "size": p.file.size,
                "mtime_ns": os.stat(p.file.path).st_mtime_ns,
                "start": p.start,
                "end": p.end,
            }
            for p in pieces
        ]
        for pieces in partitions
    ]


@dataclass(frozen=True)
class WorkDir:
    """<output-prefix>.partitions/: finished partitions of an unfinished run, and what made them."""

    path: str

    def part_prefix(self, index: int, key: str, level: str) -> str:
        return os.path.join(self.path, f"part-{index:05d}_{key}_{level}")

    def done_marker(self, index: int) -> str:
        return os.path.join(self.path, f"part-{index:05d}.done.json")

    def finished(self, index: int) -> dict | None:
        """The stats a finished partition recorded, or None if it must be (re)done."""
        try:
            with open(self.done_marker(index)) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def mark_finished(self, index: int, stats: dict) -> None:
        # Written last and atomically: a marker exists only for complete part files.
        write_json(self.done_marker(index), stats, indent=None)

    def open(self, settings: dict, partitions: Sequence[Sequence[Piece]]) -> tuple[int, int]:
        """Create or reuse the directory: (finished partitions reused, finished ones discarded).

        Finished partitions of an earlier run are reused only if the inputs (paths, sizes,
        mtimes), the partition plan and every output-affecting setting are the same.
        """
        manifest = {"settings": settings, "partitions": _describe(partitions)}
        manifest_path = os.path.join(self.path, MANIFEST)
        discarded = 0
        if os.path.isdir(self.path):
            try:
                with open(manifest_path) as f:
                    same = json.load(f) == json.loads(json.dumps(manifest))
            except (OSError, ValueError):
                same = False
            finished = sum(self.finished(i) is not None for i in range(len(partitions)))
            if same:
                return finished, 0
            discarded = len([n for n in os.listdir(self.path) if n.endswith(".done.json")])
            shutil.rmtree(self.path)
        os.makedirs(self.path)
        write_json(manifest_path, manifest, indent=1)
        return 0, discarded

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def settings_record(**settings: object) -> dict:
    """Settings as plain JSON values (dataclasses expanded) for the manifest."""
    return {
        k: asdict(v) if hasattr(v, "__dataclass_fields__") else v  # type: ignore[arg-type]
        for k, v in settings.items()
    }
