"""Reads back the documents a previous stage's task of the same rank wrote (``<folder>/<rank>.jsonl.gz``).

The dedup steps address documents by their position within a task, so task r must read exactly file r.
"""

from __future__ import annotations

import gzip
import json
import os

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseReader


class RankFileReader(BaseReader):
    name = "rank file reader"

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        path = os.path.join(self.folder, f"{rank:05d}.jsonl.gz")
        if not os.path.exists(path):  # that task kept no document
            return
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                self.stat_update("documents")
                yield Document(text=record["text"], id=record["id"], metadata=record.get("metadata", {}))
