"""A typed JobConfig from the training command's Hydra overrides, without running Hydra's app (tools that take a
training command's overrides: the benchmark, the scale rehearsal)."""

from __future__ import annotations

from typing import Sequence

from megatron_sota.config.job import JobConfig


def compose_job(overrides: Sequence[str]) -> JobConfig:
    """conf/config.yaml composed with `overrides` (keys checked, "did you mean" on a typo); mock data unless the
    overrides name data.paths or data.mock."""
    from hydra import compose, initialize_config_dir

    from megatron_sota.config.files import conf_dir
    from megatron_sota.config.job import register_configs
    from megatron_sota.config.typed import check_override_keys, to_job_config

    overrides = list(overrides)
    if not any(o.split("=")[0].lstrip("+") in ("data.paths", "data.mock") for o in overrides):
        overrides = [*overrides, "data.mock=true"]
    check_override_keys(overrides)
    register_configs()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return to_job_config(compose(config_name="config", overrides=overrides))
