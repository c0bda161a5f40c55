"""Hydra entry point: `python -m megatron_sota.posttrain posttrain=sft|rm|dpo [overrides]`, alone or under torchrun/srun.

The same config tree, run directory and error handling as megatron_sota/train.py; it only picks the objective.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from megatron_sota.config.files import conf_dir
from megatron_sota.config.job import register_configs
from megatron_sota.config.run import LOG_LEVELS
from megatron_sota.config.typed import check_override_keys, to_job_config
from megatron_sota.errors import MegatronSotaError
from megatron_sota.quiet import quiet_megatron
from megatron_sota.runtime.log import setup_logging

log = logging.getLogger("megatron_sota.posttrain")  # not __name__: that is "__main__" under -m

quiet_megatron()


@hydra.main(config_path=conf_dir(), config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    from megatron_sota.posttrain.run import posttrain

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        job = to_job_config(cfg)
        setup_logging(job.logging.level if job.logging.level in LOG_LEVELS else "INFO", job.logging.all_ranks)
        summary = posttrain(job, run_dir, command_line=" ".join(sys.argv))
    except MegatronSotaError as err:
        log.error("%s", err)
        sys.exit(getattr(err, "exit_code", 2))
    if summary.exit_code:
        sys.exit(summary.exit_code)  # preempted after saving: a launcher may requeue


def main() -> None:
    setup_logging()
    register_configs()
    try:
        check_override_keys(sys.argv[1:])
        _main()
    except MegatronSotaError as err:
        log.error("%s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()
