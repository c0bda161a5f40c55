"""Material for the release gate tests: gate files, and a run's checkpoint directory with two iterations made from the
session's tiny checkpoint without another training run."""

from __future__ import annotations

import json
import os

from megatron_sota.checkpointing.paths import complete_iterations, iter_dir, write_tracker


def write_gate(path, thresholds: dict, limit: int = 8, safety: bool = False) -> str:
    """A gate of arithmetic_mc alone (limit records) with `thresholds`; the safety task is left out unless asked for
    (its 68 generated answers would cost the tests a minute)."""
    lines = ["description: a test gate", f"safety: {str(safety).lower()}", "tasks:", "  - task: arithmetic_mc",
             f"    limit: {limit}", f"    thresholds: {json.dumps(thresholds)}"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def two_iteration_run(checkpoint: str, directory) -> str:
    """A checkpoint directory holding iter_0000010/ and the trained iter_0000020/ (both links to the trained weights),
    its tracker naming 20: the layout a training run leaves, cheaply."""
    (step,) = complete_iterations(checkpoint)
    run = os.path.join(str(directory), "checkpoints")
    os.makedirs(run)
    for iteration in (10, 20):
        os.symlink(iter_dir(checkpoint, step), iter_dir(run, iteration))
    write_tracker(run, 20)
    return run
