"""Copies documents whose quality score reaches the threshold into the high-quality blend (pretraining stage 3).

Every document is passed on unchanged; it must not drop anything.
"""

from __future__ import annotations

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from megatron_sota.curation.staged_writer import StagedJsonlWriter

QUALITY_KEY = "quality_score"


class HighQualityCopy(PipelineStep):
    type = "💽 - WRITER"
    name = "high-quality copy"

    def __init__(self, output_folder: str, threshold: float) -> None:
        super().__init__()
        self.writer = StagedJsonlWriter(output_folder, label="high_quality")
        self.threshold = threshold

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        with self.writer as writer:
            for doc in data:
                self.stat_update("total")
                if doc.metadata.get(QUALITY_KEY, 0.0) >= self.threshold:
                    self.stat_update("high_quality")
                    writer.write(doc, rank)
                yield doc
