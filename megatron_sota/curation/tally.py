"""Counts documents and tokens flowing past a point of a curation pipeline (the report's kept/dropped numbers).

A token count is attached once, when a document is read; the tallies only add it up. They must not change documents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

if TYPE_CHECKING:  # importing it pulls in megatron-core: seconds in every SLURM task that only tallies
    from megatron_sota.data.encode_worker import TokenizerSpec

TOKENS_KEY = "tokens"
TALLY_PREFIX = "tally "


class TokenCounter(PipelineStep):
    """Stores ``metadata["tokens"]``: the tokenizer's count, or whitespace-separated words when there is none."""

    type = "📊 - TALLY"
    name = "token counter"

    def __init__(self, tokenizer: TokenizerSpec | None = None) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tokenizer = self.tokenizer.build() if self.tokenizer else None
        for doc in data:
            with self.track_time():
                doc.metadata[TOKENS_KEY] = len(tokenizer.tokenize(doc.text)) if tokenizer else len(doc.text.split())
            yield doc


class Tally(PipelineStep):
    """Adds up documents and tokens under the label ``label`` (``input``, a filter's name, ``kept``)."""

    type = "📊 - TALLY"

    def __init__(self, label: str) -> None:
        self.name = f"{TALLY_PREFIX}{label}"  # before super().__init__(): the stats are filed under it
        super().__init__()
        self.label = label

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update("documents")
            self.stat_update(TOKENS_KEY, value=int(doc.metadata.get(TOKENS_KEY, 0)))
            yield doc
        # A task that saw nothing still reports zeros, so every tally is present in every task's stats.
        self.stat_update("documents", TOKENS_KEY, value=0)
