"""A JSONL.gz writer whose files appear under their final names only when the task finished writing them.

Until then they live in a hidden .incomplete/ folder, so an interrupted task never leaves a file that looks complete.
"""

from __future__ import annotations

from datatrove.pipeline.writers.jsonl import JsonlWriter

STAGING_FOLDER = ".incomplete"


class StagedJsonlWriter(JsonlWriter):
    """Writes ``<folder>/.incomplete/<rank>.jsonl.gz`` and renames it to ``<folder>/<rank>.jsonl.gz`` on success."""

    name = "staged jsonl"

    def __init__(self, output_folder: str, label: str | None = None) -> None:
        super().__init__(output_folder, output_filename=f"{STAGING_FOLDER}/${{rank}}.jsonl.gz", compression="gzip")
        if label:
            self.name = f"staged jsonl: {label}"

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        staged = list(self.output_mg.get_open_files())
        self.close()
        if exc_type is not None:
            return  # left staged; a re-run of the task rewrites it from the start
        for name in staged:
            self.output_folder.mv(name, name.removeprefix(f"{STAGING_FOLDER}/"))
