"""Turns a composed Hydra config into the typed JobConfig, naming unknown keys and their valid peers.

Hydra alone reports a misspelled key as "not in struct"; here the message lists the valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
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


@dataclasses.dataclass(frozen=True)
class _MappingOf:
    """A ``Dict[str, <dataclass>]`` field (data.sources): any key, each value checked against ``schema``."""

    schema: type


def _field_schema(hint: Any) -> type | _MappingOf | None:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and len(args) == 2 and type(None) in args:
        hint = next(arg for arg in args if arg is not type(None))  # Optional[<dataclass>] (posttrain)
        args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) is dict and len(args) == 2 and dataclasses.is_dataclass(args[1]):
        return _MappingOf(args[1])
    return None


def _sub_schemas(schema: type) -> dict[str, type | _MappingOf | None]:
    """Field name -> the dataclass type of that field, _MappingOf for named entries, None for plain values."""
    hints = typing.get_type_hints(schema)
    return {f.name: _field_schema(hints[f.name]) for f in dataclasses.fields(schema)}


def check_keys(node: Any, schema: type, path: str = "") -> None:
    """Raises for the first key of ``node`` (a mapping) that ``schema`` (a dataclass) lacks."""
    fields = _sub_schemas(schema)
    for key in node.keys():
        if key not in fields:
            raise _unknown_key_error(path, schema, str(key))
        value, sub, here = node[key], fields[key], f"{path}.{key}" if path else str(key)
        if not isinstance(value, (dict, DictConfig)):
            continue
        if isinstance(sub, _MappingOf):
            for name, entry in value.items():
                if isinstance(entry, (dict, DictConfig)):
                    check_keys(entry, sub.schema, f"{here}.{name}")
        elif sub is not None:
            check_keys(value, sub, here)


def check_override_keys(overrides: Iterable[str], root: type = JobConfig) -> None:
    """Checks dotted command-line overrides (``train.iterz=5``) against ``root`` before Hydra composes anything."""
    for override in overrides:
        if "=" not in override or override.startswith(("+", "~", "hydra.", "-")):
            continue
        dotted = override.split("=", 1)[0]
        if "." not in dotted or "@" in dotted:
            continue  # a group choice such as model=tiny; Hydra lists the available options itself
        schema: type | _MappingOf | None = root
        path = ""
        for part in dotted.split("."):
            if schema is None:
                break  # below a plain value (a list or dict field): nothing to check
            if isinstance(schema, _MappingOf):
                schema, path = schema.schema, f"{path}.{part}"  # a name of the user's choosing (data.sources.web)
                continue
            fields = _sub_schemas(schema)
            if part not in fields:
                raise _unknown_key_error(path, schema, part)
            schema = fields[part]
            path = f"{path}.{part}" if path else part


def to_typed_config(cfg: DictConfig, schema: type) -> Any:
    """Validates key names, then types (str → int etc.), and returns a ``schema`` (a dataclass) object."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    check_keys(container, schema)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), container)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise MegatronSotaError(f"invalid config value: {err}") from None


def to_job_config(cfg: DictConfig) -> JobConfig:
    """The training job's typed config (see to_typed_config)."""
    return to_typed_config(cfg, JobConfig)
