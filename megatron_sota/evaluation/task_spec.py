"""What an evaluation task is (type, data file, prompt templates, thresholds) and the registry that names them.

A task is a YAML file in conf/eval/tasks/ (so a team shares one definition of "arithmetic_em, 3-shot"),
or, for a one-off run, a bare JSONL file or Megatron .bin/.idx prefix given on the command line.
Every mistake in a YAML file is reported with the file, line and key, before any model is loaded.
"""

from __future__ import annotations

import difflib
import math
import os
import string
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from megatron_sota.config.files import conf_dir
from megatron_sota.errors import MegatronSotaError

TASK_TYPES = ("multiple_choice", "exact_match", "perplexity")
LOWER_IS_BETTER = ("perplexity", "bits_per_byte")
"""Metrics whose threshold is a maximum; every other threshold is a minimum."""
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "multiple_choice": ("acc", "acc_norm"),
    "exact_match": ("exact_match",),
    "perplexity": ("perplexity", "bits_per_byte"),
}
"""The metrics each task type reports (and so the only ones a threshold may name)."""
REGISTRY_DIR = conf_dir("eval", "tasks")
ANSWER_FIELDS = ("answer", "answer_index", "answer_letter", "choice", "letter")
"""Template fields that give the gold answer away; the question `template` may not name them."""


@dataclass(frozen=True)
class TaskSpec:
    """One task, fully resolved: `path` is absolute and exists, templates are well-formed."""

    name: str
    type: str
    """One of TASK_TYPES."""
    path: str
    """Absolute path of a JSONL file or, for perplexity only, a Megatron .bin/.idx prefix (no extension)."""
    num_fewshot: int = 0
    fewshot_seed: int = 1234
    template: str = "Question: {question}\nAnswer:"
    """The context of one record (str.format with its fields); never shows the answer."""
    choice_template: str = " {choice}"
    """multiple_choice: the continuation scored for each choice (its leading space belongs to it)."""
    target_template: str = " {answer}"
    """exact_match: how a few-shot example's answer follows its template."""
    fewshot_separator: str = "\n\n"
    max_new_tokens: int = 256
    """exact_match: generation budget per record."""
    stop: tuple[str, ...] = ("\n\n",)
    """exact_match: generation is cut at the first of these strings (empty: only max_new_tokens)."""
    limit: int | None = None
    """Score only the first `limit` records (few-shot examples are still drawn from all of them)."""
    thresholds: dict[str, float] = field(default_factory=dict)
    """metric -> bound: a minimum, or a maximum for LOWER_IS_BETTER metrics."""
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in TASK_TYPES:
            raise MegatronSotaError(f"task {self.name}: type: expected one of {', '.join(TASK_TYPES)}, found {self.type!r}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def is_megatron_prefix(self) -> bool:
        """True when `path` is a tokenized .bin/.idx prefix (perplexity on token ids, no text)."""
        return not self.path.endswith(".jsonl") and _is_prefix(self.path)


_YAML_KEYS = {f.name for f in fields(TaskSpec)} - {"name", "path"} | {"file"}
_DEFAULTS = TaskSpec("defaults", "perplexity", "")


def registered_tasks(registry_dir: str = REGISTRY_DIR) -> list[str]:
    """Sorted names of the tasks defined as <registry_dir>/<name>.yaml."""
    if not os.path.isdir(registry_dir):
        return []
    return sorted(f[: -len(".yaml")] for f in os.listdir(registry_dir) if f.endswith(".yaml") and not f.startswith("."))


def load_task(
    name_or_path: str,
    task_type: str | None = None,
    num_fewshot: int | None = None,
    registry_dir: str = REGISTRY_DIR,
) -> TaskSpec:
    """A registered task name, a task YAML, a JSONL file (needs `task_type`) or a .bin/.idx prefix (perplexity).

    `task_type` and `num_fewshot`, when given (the command line), override the YAML's values.
    """
    if task_type is not None and task_type not in TASK_TYPES:
        raise MegatronSotaError(
            f"task {name_or_path}: task type: expected one of {', '.join(TASK_TYPES)}, found {task_type!r}"
        )
    if num_fewshot is not None and (not _is_int(num_fewshot) or num_fewshot < 0):
        raise MegatronSotaError(f"task {name_or_path}: num_fewshot: expected an integer >= 0, found {num_fewshot!r}")

    registry_file = os.path.join(registry_dir, f"{name_or_path}.yaml")
    if os.sep not in name_or_path and "/" not in name_or_path and os.path.isfile(registry_file):
        return _load_yaml(registry_file, name_or_path, task_type, num_fewshot)
    if name_or_path.endswith((".yaml", ".yml")) and os.path.isfile(name_or_path):
        stem = os.path.splitext(os.path.basename(name_or_path))[0]
        return _load_yaml(os.path.abspath(name_or_path), stem, task_type, num_fewshot)

    path = os.path.abspath(os.path.expanduser(name_or_path))
    if path.endswith((".bin", ".idx")):
        path = path[: -len(".bin")]
    if os.path.isfile(path) and path.endswith(".jsonl"):
        if task_type is None:
            raise MegatronSotaError(
                f"task {name_or_path}: a JSONL file needs a task type: expected one of {', '.join(TASK_TYPES)}, found none"
            )
        name = os.path.splitext(os.path.basename(path))[0]
        return _check_spec(TaskSpec(name, task_type, path, num_fewshot=num_fewshot or 0), name_or_path)
    if _is_prefix(path):
        if task_type not in (None, "perplexity"):
            raise MegatronSotaError(
                f"task {name_or_path}: a .bin/.idx prefix holds token ids, only for type 'perplexity', found type {task_type!r}"
            )
        name = os.path.basename(path)
        return _check_spec(TaskSpec(name, "perplexity", path, num_fewshot=num_fewshot or 0), name_or_path)

    if name_or_path.endswith(".jsonl") or "/" in name_or_path or os.sep in name_or_path:
        halves = [path + ext for ext in (".bin", ".idx") if os.path.isfile(path + ext)]
        found = f"{halves[0]} without its other half" if halves else f"no file {path}"
        raise MegatronSotaError(f"task {name_or_path}: expected an existing .jsonl file or .bin/.idx prefix, found {found}")
    known = registered_tasks(registry_dir)
    hint = difflib.get_close_matches(name_or_path, known, n=1)
    raise MegatronSotaError(
        f"task {name_or_path!r}: expected a registered task name, a .jsonl file or a .bin/.idx prefix, found none of these"
        + (f" (did you mean {hint[0]!r}?)" if hint else "")
        + f"; registered tasks in {registry_dir}: {', '.join(known) if known else '(none)'}"
    )


def _load_yaml(yaml_file: str, name: str, task_type: str | None, num_fewshot: int | None) -> TaskSpec:
    """Reads and checks one registry file; every error names the file, the line and the key."""
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
    if not isinstance(data, dict):
        raise MegatronSotaError(f"{yaml_file}: expected a mapping of task keys, found {type(data).__name__}")

    lines: dict[str, int] = {}
    for key_node, _ in root.value:
        key = key_node.value
        if key in lines:
            raise MegatronSotaError(
                f"{yaml_file}:{key_node.start_mark.line + 1}: key '{key}': expected once, found again (first on line {lines[key]})"
            )
        lines[key] = key_node.start_mark.line + 1

    def where(key: str) -> str:
        return f"{yaml_file}:{lines[key]}: key '{key}'" if key in lines else f"{yaml_file}: key '{key}'"

    for key in data:
        if key not in _YAML_KEYS:
            hint = difflib.get_close_matches(str(key), sorted(_YAML_KEYS), n=1)
            raise MegatronSotaError(
                f"{where(key)}: unknown key; expected one of {', '.join(sorted(_YAML_KEYS))}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
    for key in ("type", "file"):
        if key not in data:
            raise MegatronSotaError(f"{yaml_file}: key '{key}': expected it (required), found nothing")

    def get(key: str, kind: str) -> Any:
        value = data.get(key, getattr(_DEFAULTS, key) if key != "file" else None)
        if key not in data:
            return value
        ok = {
            "str": isinstance(value, str),
            "int": _is_int(value),
            "int>=0": _is_int(value) and value >= 0,
            "int>=1": _is_int(value) and value >= 1,
            "int>=1|null": value is None or (_is_int(value) and value >= 1),
        }[kind]
        if not ok:
            expected = {
                "str": "a string",
                "int": "an integer",
                "int>=0": "an integer >= 0",
                "int>=1": "an integer >= 1",
                "int>=1|null": "an integer >= 1 or null",
            }[kind]
            raise MegatronSotaError(f"{where(key)}: expected {expected}, found {value!r}")
        return value

    declared_type = get("type", "str")
    if declared_type not in TASK_TYPES:
        raise MegatronSotaError(f"{where('type')}: expected one of {', '.join(TASK_TYPES)}, found {declared_type!r}")
    file_value = get("file", "str")
    path = os.path.normpath(os.path.join(os.path.dirname(yaml_file), os.path.expanduser(file_value)))
    if path.endswith((".bin", ".idx")):
        path = path[: -len(".bin")]
    if os.path.isfile(path) and not path.endswith(".jsonl"):
        raise MegatronSotaError(
            f"{where('file')}: expected a .jsonl file or a .bin/.idx prefix, found {os.path.basename(path)!r}"
        )
    if not os.path.isfile(path) and not _is_prefix(path):
        halves = [path + ext for ext in (".bin", ".idx") if os.path.isfile(path + ext)]
        found = f"{halves[0]} without its other half" if halves else f"no file {path}"
        raise MegatronSotaError(
            f"{where('file')}: expected an existing JSONL file or .bin/.idx prefix "
            f"(relative to {os.path.dirname(yaml_file)}), found {found}"
        )

    stop = data.get("stop", _DEFAULTS.stop)
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
        raise MegatronSotaError(f"{where('stop')}: expected a non-empty string or a list of them, found {stop!r}")

    thresholds = data.get("thresholds", {}) or {}
    if not isinstance(thresholds, dict) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for k, v in thresholds.items()
    ):
        raise MegatronSotaError(f"{where('thresholds')}: expected a mapping of metric name to number, found {thresholds!r}")

    spec = TaskSpec(
        name=name,
        type=task_type or declared_type,
        path=path,
        num_fewshot=get("num_fewshot", "int>=0") if num_fewshot is None else num_fewshot,
        fewshot_seed=get("fewshot_seed", "int"),
        template=get("template", "str"),
        choice_template=get("choice_template", "str"),
        target_template=get("target_template", "str"),
        fewshot_separator=get("fewshot_separator", "str"),
        max_new_tokens=get("max_new_tokens", "int>=1"),
        stop=tuple(stop),
        limit=get("limit", "int>=1|null"),
        thresholds={k: float(v) for k, v in thresholds.items()},
        description=get("description", "str"),
    )
    return _check_spec(spec, yaml_file, where)


def _check_spec(spec: TaskSpec, origin: str, where: Callable[[str], str] | None = None) -> TaskSpec:
    """Checks that need the final type (after a command-line override): data format, templates, thresholds."""

    def at(key: str) -> str:
        return where(key) if where is not None else f"task {spec.name} ({origin}): {key}"

    if spec.is_megatron_prefix and spec.type != "perplexity":
        raise MegatronSotaError(
            f"{at('file')}: a .bin/.idx prefix holds token ids, only for type 'perplexity', found type {spec.type!r}"
        )
    if spec.type == "perplexity" and spec.num_fewshot:
        raise MegatronSotaError(
            f"{at('num_fewshot')}: perplexity scores whole documents without few-shot examples: expected 0, found {spec.num_fewshot}"
        )
    for key in ("template", "choice_template", "target_template"):
        names = _template_fields(getattr(spec, key), at(key))
        if key == "template":
            leaked = sorted(names & set(ANSWER_FIELDS))
            if leaked:
                raise MegatronSotaError(
                    f"{at(key)}: the question template must not show the answer: expected no field among "
                    f"{', '.join(ANSWER_FIELDS)}, found {{{leaked[0]}}}"
                )
    reported = TASK_METRICS[spec.type]
    for metric in spec.thresholds:
        if metric not in reported:
            raise MegatronSotaError(
                f"{at('thresholds')}: metric {metric!r}: expected one that {spec.type} tasks report "
                f"({', '.join(reported)}), found {metric!r}"
            )
    return spec


def _template_fields(template: str, where: str) -> set[str]:
    """Top-level field names of a str.format template (an error for malformed braces or positional fields)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise MegatronSotaError(f"{where}: expected a str.format template (write {{{{ for a literal brace), found {template!r}: {err}") from None
    names = set()
    for _, field_name, _, _ in parsed:
        if field_name is None:
            continue
        base = field_name.split(".", 1)[0].split("[", 1)[0]
        if not base or base.isdigit():
            raise MegatronSotaError(f"{where}: expected named fields like {{question}}, found {{{field_name}}} in {template!r}")
        names.add(base)
    return names


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_prefix(path: str) -> bool:
    return os.path.isfile(path + ".bin") and os.path.isfile(path + ".idx")

