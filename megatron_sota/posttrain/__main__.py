"""Hydra entry point: `python -m megatron_sota.posttrain posttrain=sft|rm|dpo [overrides]`, alone or under torchrun/srun.

The same config tree, run directory and error handling as megatron_sota/train.py (runtime/hydra_entry.py);
it hands the job to posttrain/run.py, which picks the objective.
"""

from __future__ import annotations

import logging

from megatron_sota.quiet import quiet_megatron
from megatron_sota.runtime.hydra_entry import RunJob, run_hydra_command

log = logging.getLogger("megatron_sota.posttrain")  # not __name__: that is "__main__" under -m

quiet_megatron()


def _posttrain() -> RunJob:
    from megatron_sota.posttrain.run import posttrain

    return lambda job, run_dir, command_line: posttrain(job, run_dir, command_line=command_line)


def main() -> None:
    run_hydra_command("posttrain", _posttrain, log)


if __name__ == "__main__":
    main()
