"""Where a curation run puts everything, under one output directory.

Outputs a person uses are at the top; intermediate data under work/, datatrove's logs and markers under logs/.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class RunLayout:
    root: str

    def _at(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def documents(self) -> str:
        """Every kept document, <rank>.jsonl.gz."""
        return self._at("documents")

    @property
    def high_quality(self) -> str:
        """The kept documents whose quality score reaches quality.threshold."""
        return self._at("high_quality")

    def rejected(self, filter_label: str) -> str:
        """Documents a filter dropped, each with metadata.filter_reason when the filter gives one."""
        return self._at("rejected", filter_label)

    def tokenized_prefix(self, name: str) -> str:
        """tokenized/<name>; the pair is <name>_text_document.bin/.idx."""
        return self._at("tokenized", name)

    def report(self, extension: str) -> str:
        return self._at(f"report.{extension}")

    @property
    def config_record(self) -> str:
        return self._at("curate_config.json")

    @property
    def inputs_list(self) -> str:
        return self._at("work", "inputs.json")

    def work(self, name: str) -> str:
        return self._at("work", name)

    def logs(self, stage: str) -> str:
        """A stage's datatrove logging dir: completions/, stats/, logs/, slurm_logs/."""
        return self._at("logs", stage)

    @property
    def bad_input(self) -> str:
        return self._at("logs", "bad_input")
