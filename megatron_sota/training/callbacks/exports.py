"""Hugging Face export duty: every `checkpoint.export_hf_every` steps (and the last) the step is saved and exported in the background.

The export process reads the finished checkpoint; failures are raised once the run has ended.
"""

from __future__ import annotations

from megatron_sota.training.callbacks.base import Callback
from megatron_sota.training.hf_export import BackgroundExporter


class HFExport(Callback):
    """Runs before PeriodicCheckpoint: finished exports unpin their checkpoints before a save prunes."""

    def __init__(self, exporter: BackgroundExporter):
        self.exporter = exporter

    def post_step(self, trainer, outcome) -> None:
        self.exporter.poll()
        if self.exporter.due(outcome.step, last=trainer.is_last_step):
            trainer.save()
            trainer.checkpoints.wait_for_pending()  # the export reads the finished checkpoint
            self.exporter.start(outcome.step)

    def post_train(self, trainer) -> None:
        # A preempted job has seconds left: it does not wait for exports still running.
        self.exporter.close(wait=trainer.summary.exit_code == 0)
