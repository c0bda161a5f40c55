"""The release gate's per-iteration results, kept in its output directory so that a second run evaluates only new checkpoints.

An entry is keyed by the iteration and a hash of everything its rows depend on (tasks without their thresholds, data
file contents, limit, batch size, TP, device); it must not judge thresholds, which are checked afresh on every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from megatron_sota.atomic_files import write_json
from megatron_sota.evaluation.report import MetricRow
from megatron_sota.evaluation.task_spec import TaskSpec

log = logging.getLogger(__name__)

NOT_IN_KEY = ("thresholds", "source", "description")
"""TaskSpec fields the rows do not depend on."""


@dataclass(frozen=True)
class IterationResult:
    iteration: int | None
    checkpoint: str
    rows: tuple[MetricRow, ...]
    seconds: Mapping[str, float]
    cached: bool


def results_key(specs: Sequence[TaskSpec], limit: int | None, micro_batch_size: int, tensor_parallel: int, device: str) -> str:
    """A hex digest of what a checkpoint's rows depend on besides its weights."""
    tasks = []
    for spec in specs:
        fields = {k: v for k, v in dataclasses.asdict(spec).items() if k not in NOT_IN_KEY}
        fields["data"] = [_fingerprint(p) for p in _data_files(spec)]
        tasks.append(fields)
    key = {"tasks": tasks, "limit": limit, "micro_batch_size": micro_batch_size, "tensor_parallel": tensor_parallel, "device": device}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _data_files(spec: TaskSpec) -> list[str]:
    files = [spec.path] if spec.path.endswith(".jsonl") else [spec.path + ".idx", spec.path + ".bin"] if spec.path else []
    return files + ([spec.filler] if spec.filler else [])


def _fingerprint(path: str) -> str:
    """The file's content hash; a tokenized .bin (possibly gigabytes) by size and modification time instead."""
    stat = os.stat(path)
    if path.endswith(".bin"):
        return f"{stat.st_size}:{stat.st_mtime_ns}"
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_stamp(checkpoint: str) -> int:
    """Changes when the iteration is saved again (a new run in the same directory): its directory's modification time."""
    return os.stat(checkpoint).st_mtime_ns


class ResultsCache:
    """`<directory>/iter_NNNNNNN.<key[:16]>.json` per evaluated iteration; a checkpoint without an iteration is not kept."""

    def __init__(self, directory: str, key: str):
        self.directory, self.key = directory, key

    def _path(self, iteration: int) -> str:
        return os.path.join(self.directory, f"iter_{iteration:07d}.{self.key[:16]}.json")

    def load(self, iteration: int | None, checkpoint: str) -> IterationResult | None:
        """The kept result of this checkpoint, or None (never evaluated with this key, or saved again since)."""
        if iteration is None or not os.path.isfile(self._path(iteration)):
            return None
        entry = self._read(self._path(iteration))
        if entry is None or entry["checkpoint"] != os.path.abspath(checkpoint) or entry["stamp"] != checkpoint_stamp(checkpoint):
            log.info("iteration %s: its kept results are for another checkpoint or key; evaluating it again", iteration)
            return None
        return self._result(entry)

    def store(self, result: IterationResult) -> None:
        if result.iteration is None:
            return
        entry = {
            "key": self.key, "iteration": result.iteration, "checkpoint": os.path.abspath(result.checkpoint),
            "stamp": checkpoint_stamp(result.checkpoint), "seconds": dict(result.seconds),
            "rows": [dataclasses.asdict(row) for row in result.rows],
        }
        write_json(self._path(result.iteration), entry)

    def history(self, save_dir: str) -> list[IterationResult]:
        """Every kept result with this key for checkpoints of `save_dir`, oldest iteration first."""
        if not os.path.isdir(self.directory):
            return []
        found = []
        suffix = f".{self.key[:16]}.json"
        root = os.path.abspath(save_dir)
        for name in sorted(os.listdir(self.directory)):
            entry = self._read(os.path.join(self.directory, name)) if name.endswith(suffix) else None
            if entry is not None and os.path.dirname(entry["checkpoint"]) == root:
                found.append(self._result(entry))
        return sorted(found, key=lambda r: r.iteration)

    def _read(self, path: str) -> dict | None:
        with open(path, encoding="utf-8") as handle:
            entry = json.load(handle)
        return entry if entry.get("key") == self.key else None  # a 16-digit prefix clash: not ours

    @staticmethod
    def _result(entry: dict) -> IterationResult:
        rows = tuple(MetricRow(**row) for row in entry["rows"])
        return IterationResult(entry["iteration"], entry["checkpoint"], rows, entry["seconds"], cached=True)
