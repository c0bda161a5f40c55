"""What a preprocessing run reports: the live progress bar and the final summary.

Counting and formatting only; it must not read inputs or write shards.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from tqdm import tqdm

# Skipped records quoted by file and line in the summary; the rest are only counted.
EXAMPLES_KEPT = 10


@dataclass
class PreprocessStats:
    """What a run wrote and what it skipped, by reason."""

    documents: int = 0
    tokens: int = 0
    text_bytes: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    """'file:line: reason' of the first skipped records."""
    outputs: dict[str, str] = field(default_factory=dict)
    partitions_reused: int = 0
    seconds: float = 0.0

    def add(self, other: dict) -> None:
        self.documents += other["documents"]
        self.tokens += other["tokens"]
        self.text_bytes += other["text_bytes"]
        self.skipped.update(other["skipped"])
        room = EXAMPLES_KEPT - len(self.examples)
        self.examples += other["examples"][: max(room, 0)]

    def summary(self) -> str:
        seconds = max(self.seconds, 1e-9)
        skipped = ", ".join(f"{r}={n}" for r, n in sorted(self.skipped.items()))
        lines = [
            f"documents: {self.documents:,}",
            f"tokens: {self.tokens:,}",
            f"input: {self.input_bytes / 2**20:,.1f} MiB on disk, "
            f"{self.text_bytes / 2**20:,.1f} MiB of text; output: {self.output_bytes / 2**20:,.1f} MiB",
            f"skipped records: {sum(self.skipped.values()):,}" + (f" ({skipped})" if skipped else ""),
        ]
        lines += [f"  {example}" for example in self.examples]
        lines.append(
            f"time: {self.seconds:.1f}s ({self.documents / seconds:,.0f} docs/s, "
            f"{self.text_bytes / 2**20 / seconds:,.2f} MB/s, {self.tokens / seconds:,.0f} tokens/s)"
            + (f"; {self.partitions_reused} finished partitions reused" if self.partitions_reused else "")
        )
        lines += [f"wrote: {prefix}.bin/.idx  [{key}]" for key, prefix in self.outputs.items()]
        return "\n".join(lines)


class ProgressBar:
    """tqdm over input bytes on disk, with docs/s and tokens/s beside MB/s and the ETA."""

    def __init__(self, total_bytes: int, progress: bool, log_interval: int) -> None:
        self.bar = tqdm(
            total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
            disable=not progress, desc="tokenizing", mininterval=1.0,
        )
        self.interval = max(log_interval, 1)
        self.start = time.perf_counter()
        self.documents = 0
        self.tokens = 0
        self.next_refresh = self.interval

    def update(self, disk_bytes: int, documents: int, tokens: int) -> None:
        self.bar.update(disk_bytes)
        self.documents += documents
        self.tokens += tokens
        if self.documents >= self.next_refresh:
            self.next_refresh = self.documents + self.interval
            seconds = max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix_str(
                f"{self.documents:,} docs, {self.documents / seconds:,.0f} docs/s, "
                f"{self.tokens / seconds:,.0f} tok/s", refresh=False,
            )

    def close(self) -> None:
        self.bar.close()
