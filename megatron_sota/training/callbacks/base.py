"""The hooks a Trainer calls; a callback overrides the ones its duty needs.

Hooks run on every rank in list order, so a collective inside one lines up across ranks; a
callback must not skip a collective on some ranks only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from megatron_sota.training.loop import StepOutcome, Trainer


class Callback:
    def pre_train(self, trainer: "Trainer") -> None:
        """Before the first step (trainer.step is the step resumed from)."""

    def pre_step(self, trainer: "Trainer") -> None:
        """Before a step; trainer.step is the step about to run."""

    def post_step(self, trainer: "Trainer", outcome: "StepOutcome") -> None:
        """After a step's optimizer update (or skip)."""

    def post_train(self, trainer: "Trainer") -> None:
        """After the last step, when the loop ended without an error."""

    def close(self, trainer: "Trainer") -> None:
        """Always, after an error too: release what pre_train took (files, signal handlers)."""
