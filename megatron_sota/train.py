"""Hydra entry point: `python -m megatron_sota.train [overrides]`, alone or under torchrun/srun.

It hands the composed, typed config to the trainer (runtime/hydra_entry.py does the command line).
"""

from __future__ import annotations

import logging

from megatron_sota.quiet import quiet_megatron
from megatron_sota.runtime.hydra_entry import RunJob, run_hydra_command

log = logging.getLogger("megatron_sota.train")  # not __name__: that is "__main__" under -m

quiet_megatron()


def _pretrain() -> RunJob:
    from megatron_sota.training.trainer import pretrain

    return lambda job, run_dir, command_line: pretrain(job, run_dir, command_line=command_line)


def main() -> None:
    run_hydra_command("train", _pretrain, log)


if __name__ == "__main__":
    main()
