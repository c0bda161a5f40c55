"""The Hydra command line every run entry point shares (`megatron_sota.train`, `megatron_sota.posttrain`).

It composes and types the config, sets up console logging and turns user errors into one message and an
exit code; it must not know what the run does (the entry point hands it the function that runs the job).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from megatron_sota.config.files import conf_dir
from megatron_sota.config.job import JobConfig, register_configs
from megatron_sota.config.run import LOG_LEVELS
from megatron_sota.config.typed import check_override_keys, to_job_config
from megatron_sota.errors import MegatronSotaError
from megatron_sota.runtime.log import setup_logging

RunJob = Callable[[JobConfig, str, str], Any]
"""(job, run_dir, command_line) -> a summary whose `exit_code` is 0, or PREEMPTED_EXIT_CODE after a save."""


def run_hydra_command(name: str, run: Callable[[], RunJob], log: logging.Logger) -> None:
    """Parses sys.argv as Hydra overrides of the shipped config tree and runs the job `run()` returns.

    `name` is Hydra's job name (its log file in the run directory is <name>.log).
    `run` is called only once the config is composed, so an entry point can import its heavy modules late.
    A MegatronSotaError (a bad config, data or checkpoint; a diverged run) is one logged message and exit
    code 2 (or the error's own), without a traceback.
    """

    def _main(cfg: DictConfig) -> None:
        run_dir = HydraConfig.get().runtime.output_dir
        try:
            job = to_job_config(cfg)
            # After Hydra has configured logging. A level not in LOG_LEVELS is reported by validate_job
            # with every other config problem, so until then the run logs at INFO.
            setup_logging(job.logging.level if job.logging.level in LOG_LEVELS else "INFO", job.logging.all_ranks)
            summary = run()(job, run_dir, " ".join(sys.argv))
        except MegatronSotaError as err:
            log.error("%s", err)
            sys.exit(getattr(err, "exit_code", 2))
        if summary.exit_code:
            sys.exit(summary.exit_code)  # preempted after saving: a launcher may requeue

    # Hydra names the job after the task function's module (its last component); the config path is absolute.
    _main.__module__ = f"megatron_sota.{name}"
    main = hydra.main(config_path=conf_dir(), config_name="config", version_base="1.3")(_main)
    setup_logging()  # mistakes in the command line are reported before the config is composed
    register_configs()
    try:
        check_override_keys(sys.argv[1:])
        main()
    except MegatronSotaError as err:
        log.error("%s", err)
        sys.exit(2)
