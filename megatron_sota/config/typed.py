"""Turns a composed Hydra config into the typed JobConfig, naming unknown keys and their valid peers.

Hydra alone reports a misspelled key as "not in struct"; here the message lists the valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from megatron_sota.config.job import JobConfig
from megatron_sota.errors import MegatronSotaError


def _unknown_key_error(path: str, schema: type, key: str) -> MegatronSotaError:
    valid = [f.name for f in dataclasses.fields(schema)]
    full = f"{path}.{key}" if path else key
    hint = difflib.get_close_matches(key, valid, n=1)
    did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
    where = f"'{path}'" if path else "the root config"
    return MegatronSotaError(
        f"unknown config key '{full}'{did_you_mean}; valid keys of {where}: {', '.join(valid)}"
    )


def check_keys(node: Any, schema: type, path: str = "") -> None:
    """Raises for the first key of ``node`` (a mapping) that ``schema`` (a dataclass) lacks."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in node.keys():
        if key not in fields:
            raise _unknown_key_error(path, schema, str(key))
        field_type = fields[key].type
        sub_schema = _dataclass_named(field_type)
        value = node[key]
        if sub_schema is not None and isinstance(value, (dict, DictConfig)):
            check_keys(value, sub_schema, f"{path}.{key}" if path else str(key))


def _dataclass_named(type_name: Any) -> type | None:
    from megatron_sota.config import job

    name = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", "")
    candidate = getattr(job, name, None)
    return candidate if dataclasses.is_dataclass(candidate) else None


def check_override_keys(overrides: Iterable[str]) -> None:
    """Checks dotted command-line overrides (``train.iterz=5``) before Hydra composes anything."""
    for override in overrides:
        if "=" not in override or override.startswith(("+", "~", "hydra.", "-")):
            continue
        dotted = override.split("=", 1)[0]
        if "." not in dotted or "@" in dotted:
            continue  # a group choice such as model=tiny; Hydra lists the available options itself
        parts = dotted.split(".")
        schema: type | None = JobConfig
        path = ""
        for part in parts:
            if schema is None:
                break
            fields = {f.name: f for f in dataclasses.fields(schema)}
            if part not in fields:
                raise _unknown_key_error(path, schema, part)
            schema = _dataclass_named(fields[part].type)
            path = f"{path}.{part}" if path else part


def to_job_config(cfg: DictConfig) -> JobConfig:
    """Validates key names, then types (str → int etc.), and returns a JobConfig object."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    check_keys(container, JobConfig)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(JobConfig), container)
    except OmegaConfBaseException as err:
        raise MegatronSotaError(f"invalid config value: {err}") from None
    return OmegaConf.to_object(merged)
