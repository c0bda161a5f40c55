"""Hydra entry point: `python -m megatron_sota.train [overrides]`, alone or under torchrun/srun.

It composes and types the config, saves it to the run directory and hands over to the trainer.
"""

from __future__ import annotations

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from megatron_sota.config.files import conf_dir
from megatron_sota.config.job import register_configs
from megatron_sota.config.typed import check_override_keys, to_job_config
from megatron_sota.errors import MegatronSotaError
from megatron_sota.quiet import quiet_megatron

CONF_DIR = conf_dir()

quiet_megatron()


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    quiet_megatron()  # again: hydra's logging setup resets logger levels
    from megatron_sota.training.trainer import pretrain

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        summary = pretrain(to_job_config(cfg), run_dir, command_line=" ".join(sys.argv))
    except MegatronSotaError as err:
        # A user's mistake (bad config, data or checkpoint) or a diverged run: one message, no traceback.
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(getattr(err, "exit_code", 2))
    if summary.exit_code:
        sys.exit(summary.exit_code)  # preempted after saving: a launcher may requeue


def main() -> None:
    register_configs()
    try:
        check_override_keys(sys.argv[1:])
        _main()
    except MegatronSotaError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
