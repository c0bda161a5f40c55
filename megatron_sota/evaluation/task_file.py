"""A task YAML (conf/eval/tasks/<name>.yaml) typed by config.evaluation.TaskFile, with its line numbers.

Every key's problem is kept (unknown, given twice, wrong type, below its "min", a required key missing) for
task_spec.py to report all at once; checks that need the whole task (type, file, templates) are made there.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from megatron_sota.config.evaluation import TaskFile
from megatron_sota.errors import MegatronSotaError

_KEYS = {f.name: f for f in dataclasses.fields(TaskFile)}
_HINTS = typing.get_type_hints(TaskFile)
_NOUNS = {int: "integer", float: "number", str: "string"}


@dataclass
class TaskFileReading:
    path: str
    data: dict
    """The file's mapping as written."""
    lines: dict[str, int]
    """Key -> the line it is first given on."""
    values: dict = field(default_factory=dict)
    """Key -> value, typed, for every key without a problem."""
    problems: dict[str, str] = field(default_factory=dict)
    """Key -> a message naming the file, line and key, what was expected and what was found."""

    def where(self, key: str) -> str:
        return f"{self.path}:{self.lines[key]}: key '{key}'" if key in self.lines else f"{self.path}: key '{key}'"

    def line(self, key: str) -> int:
        return self.lines.get(key, 0)


def read_task_file(path: str) -> TaskFileReading:
    """The file's keys, typed; a file that is not a YAML mapping raises at once."""
    data, lines, twice = _read_mapping(path)
    reading = TaskFileReading(path, data, lines, problems=twice)
    schema = OmegaConf.structured(TaskFile)
    for key, value in data.items():
        if key in reading.problems:
            continue
        if key not in _KEYS:
            hint = difflib.get_close_matches(str(key), sorted(_KEYS), n=1)
            reading.problems[key] = (
                f"{reading.where(key)}: unknown key; expected one of {', '.join(sorted(_KEYS))}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
            continue
        if _HINTS[key] is typing.Any or (_HINTS[key] is str and isinstance(value, str)):
            reading.values[key] = value  # as written: OmegaConf would read "${...}" in a template as an interpolation
            continue
        try:
            typed = OmegaConf.to_container(OmegaConf.merge(schema, {key: value}))[key]
        except OmegaConfBaseException:
            typed = None
        if (typed is None and value is not None) or not _in_range(typed, _KEYS[key].metadata):
            reading.problems[key] = f"{reading.where(key)}: expected {expected_value(key)}, found {value!r}"
        else:
            reading.values[key] = typed
    for key, schema_field in _KEYS.items():
        if schema_field.default == MISSING and key not in data:
            reading.problems[key] = f"{path}: key '{key}': expected it (required), found nothing"
    return reading


def _in_range(typed: object, metadata: typing.Mapping) -> bool:
    """`typed` (or each item of a list) within the field's "min" and "max"; None passes."""
    for item in typed if isinstance(typed, list) else [typed]:
        if item is None:
            continue
        if ("min" in metadata and item < metadata["min"]) or ("max" in metadata and item > metadata["max"]):
            return False
    return True


def expected_value(key: str) -> str:
    """What TaskFile allows for `key`, in words: "an integer >= 1 or null", "a list of numbers from 0.0 to 1.0"."""
    metadata, hint = _KEYS[key].metadata, _HINTS[key]
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) is typing.Union and type(None) in args
    if optional:
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is dict:
        return f"a mapping of {metadata.get('keys', 'string')} to {_NOUNS[typing.get_args(hint)[1]]}" + (" or null" if optional else "")
    if "min" in metadata and "max" in metadata:
        bounds = f" from {metadata['min']} to {metadata['max']}"
    else:
        bounds = f" >= {metadata['min']}" if "min" in metadata else ""
    if typing.get_origin(hint) is list:
        words = f"a list of {_NOUNS[typing.get_args(hint)[0]]}s{bounds}"
    else:
        noun = _NOUNS.get(hint, "value")
        words = f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}{bounds}"
    return words + (" or null" if optional else "")


def load_yaml(yaml_file: str) -> tuple[object, yaml.Node]:
    """(the file's YAML value, its node tree for line numbers); an unreadable file or invalid YAML raises, naming the line."""
    try:
        with open(yaml_file, encoding="utf-8") as handle:
            text = handle.read()
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except OSError as err:
        raise MegatronSotaError(f"{yaml_file}: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{yaml_file}:{mark.line + 1}" if mark is not None else yaml_file
        raise MegatronSotaError(f"{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None
    return data, root


def _read_mapping(yaml_file: str) -> tuple[dict, dict[str, int], dict[str, str]]:
    """(the YAML mapping, key -> line, key -> problem for keys given twice); unreadable YAML raises."""
    data, root = load_yaml(yaml_file)
    if not isinstance(data, dict):
        raise MegatronSotaError(f"{yaml_file}: expected a mapping of task keys, found {type(data).__name__}")
    lines, twice = key_lines(root, yaml_file)
    return data, lines, {key: message for _, key, message in twice}


def key_lines(node: yaml.MappingNode, path: str, prefix: str = "") -> tuple[dict[str, int], list[tuple[int, str, str]]]:
    """(key -> the line it is first given on, (line, key, message) for each key given again: YAML would keep the last
    silently); `prefix` names the mapping in messages ("tasks[0].")."""
    lines: dict[str, int] = {}
    twice: list[tuple[int, str, str]] = []
    for key_node, _ in node.value:
        key, line = key_node.value, key_node.start_mark.line + 1
        if key in lines:
            twice.append((line, key, f"{path}:{line}: key '{prefix}{key}': expected once, found again (first on line {lines[key]})"))
        else:
            lines[key] = line
    return lines, twice
