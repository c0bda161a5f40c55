"""A release gate file (gate.yaml): the tasks a checkpoint must pass, each with its thresholds and overrides, read and checked.

Every problem is listed at once, each with file, line and key, before any model loads; it must not run a model.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass

import yaml

from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation.runner import check_task_data
from megatron_sota.evaluation.task_file import key_lines, load_yaml
from megatron_sota.evaluation.task_spec import (
    NO_FEWSHOT_TYPES, REGISTRY_DIR, TASK_TYPES, THRESHOLDS_EXPECTED, TaskSpec, load_task, spec_problems, typed_thresholds,
)

SAFETY_TASK = "safety_refusal"
"""The registered safety gate of post-training II, added to every gate (`safety: true`, the default) that lists no refusal task."""
GATE_KEYS = ("description", "safety", "tasks")
ENTRY_KEYS = ("task", "type", "thresholds", "num_fewshot", "limit", "chat")


@dataclass(frozen=True)
class GateTask:
    spec: TaskSpec
    """The task with the gate's overrides and thresholds applied."""
    origin: str
    """Where the gate took it from: "gate.yaml:7", or why it was added."""


@dataclass(frozen=True)
class ReleaseGate:
    path: str
    description: str
    tasks: tuple[GateTask, ...]
    safety: str
    """What `safety` did, in words, for the report."""

    @property
    def specs(self) -> dict[str, TaskSpec]:
        return {task.spec.name: task.spec for task in self.tasks}


def read_gate(path: str, registry_dir: str = REGISTRY_DIR) -> ReleaseGate:
    """The gate file's tasks, resolved and checked (data read, prompts built); every problem raised at once."""
    data, root = _load(path)
    problems: list[tuple[int, str]] = []
    top = _key_lines(root, path, "", problems)
    for key in data:
        if key not in GATE_KEYS:
            problems.append((top[key], _unknown(path, top[key], str(key), GATE_KEYS)))
    description, safety = data.get("description", ""), data.get("safety", True)
    if not isinstance(description, str):
        problems.append((top["description"], f"{path}:{top['description']}: key 'description': expected a string, found {description!r}"))
    if not isinstance(safety, bool):
        problems.append((top["safety"], f"{path}:{top['safety']}: key 'safety': expected true or false, found {safety!r}"))
    entries = data.get("tasks")
    tasks: list[GateTask] = []
    if not isinstance(entries, list) or not entries:
        where = f"{path}:{top['tasks']}" if "tasks" in top else path
        problems.append((top.get("tasks", 0), f"{where}: key 'tasks': expected a non-empty list of {{task: ..., thresholds: ...}}, found {entries!r}"))
    else:
        node = _value_node(root, "tasks")
        for index, (entry, entry_node) in enumerate(zip(entries, node.value)):
            task = _read_entry(path, index, entry, entry_node, registry_dir, problems)
            if task is not None:
                tasks.append(task)
    seen: dict[str, str] = {}
    for task in tasks:
        if task.spec.name in seen:
            line = int(task.origin.rsplit(":", 1)[1])
            problems.append((line, f"{task.origin}: key 'task': expected each task once (its rows are named by it), found {task.spec.name!r} again (first at {seen[task.spec.name]})"))
        seen.setdefault(task.spec.name, task.origin)
    safety_note = "off (safety: false)"
    if safety is True and not problems:
        safety_note = _add_safety(tasks, registry_dir, problems)
    if problems:
        raise MegatronSotaError("\n".join(message for _, message in sorted(problems, key=lambda p: p[0])))
    return ReleaseGate(path, description, tuple(tasks), safety_note)


def _add_safety(tasks: list[GateTask], registry_dir: str, problems: list[tuple[int, str]]) -> str:
    """Appends the registered safety task (its own thresholds) unless the gate lists a refusal task; says what it did."""
    listed = [t.spec.name for t in tasks if t.spec.type == "refusal"]
    if listed:
        return f"listed in the gate ({', '.join(listed)})"
    if not os.path.isfile(os.path.join(registry_dir, f"{SAFETY_TASK}.yaml")):
        return f"none: no registered task {SAFETY_TASK}"
    try:
        spec = load_task(SAFETY_TASK, registry_dir=registry_dir)
        check_task_data(spec)
    except MegatronSotaError as err:
        problems.append((0, f"safety: true adds the registered task {SAFETY_TASK}, which does not load:\n  {_indent(err)}"))
        return ""
    tasks.append(GateTask(spec, f"added by safety: true ({spec.source})"))
    return f"added {SAFETY_TASK} with its own thresholds (safety: true)"


def _read_entry(
    path: str, index: int, entry: object, node: yaml.Node, registry_dir: str, problems: list[tuple[int, str]]
) -> GateTask | None:
    """One `tasks:` item as a task with its overrides; None (with its problems recorded) when it has any."""
    start = node.start_mark.line + 1
    if not isinstance(entry, dict):
        problems.append((start, f"{path}:{start}: key 'tasks[{index}]': expected a mapping with 'task' and 'thresholds', found {entry!r}"))
        return None
    lines = _key_lines(node, path, f"tasks[{index}].", problems)
    count = len(problems)

    def where(key: str) -> str:
        return f"{path}:{lines.get(key, start)}: key 'tasks[{index}].{key}'"

    def problem(key: str, message: str) -> None:
        problems.append((lines.get(key, start), f"{where(key)}: {message}"))

    for key in entry:
        if key not in ENTRY_KEYS:
            problems.append((lines[key], _unknown(path, lines[key], f"tasks[{index}].{key}", ENTRY_KEYS)))
    name = entry.get("task")
    if not isinstance(name, str) or not name:
        problem("task", f"expected a registered task name, a task YAML or a JSONL file (relative to the gate file), found {name!r}")
    task_type = entry.get("type")
    if task_type is not None and task_type not in TASK_TYPES:
        problem("type", f"expected one of {', '.join(TASK_TYPES)}, found {task_type!r}")
    for key, low in (("num_fewshot", 0), ("limit", 1)):
        value = entry.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            problem(key, f"expected an integer >= {low}, found {value!r}")
    if "chat" in entry and not isinstance(entry["chat"], bool):
        problem("chat", f"expected true or false, found {entry['chat']!r}")
    thresholds = None
    if "thresholds" in entry:
        try:
            thresholds = typed_thresholds(entry["thresholds"])
        except ValueError as err:
            problem("thresholds", f"expected {THRESHOLDS_EXPECTED}, found {entry['thresholds']!r}{err}")
    if len(problems) > count:
        return None

    try:
        spec = load_task(_task_argument(name, os.path.dirname(os.path.abspath(path)), registry_dir), task_type, registry_dir=registry_dir)
        check_task_data(spec)
    except MegatronSotaError as err:
        problem("task", _indent(err))
        return None
    overrides: dict = {key: entry[key] for key in ("limit", "chat", "num_fewshot") if key in entry}
    if "num_fewshot" in overrides and spec.type in NO_FEWSHOT_TYPES:
        problem("num_fewshot", f"{spec.type} tasks show no few-shot examples: expected no num_fewshot, found {entry['num_fewshot']!r}")
        return None
    if thresholds is not None:
        overrides["thresholds"] = thresholds
    spec = dataclasses.replace(spec, **overrides)
    # The task file passed these checks as written; what fails now is the gate's overrides (a threshold on a
    # metric the type does not report, chat on a scored type), so each is reported at the gate's line.
    for key, message in spec_problems(spec, where):
        problems.append((lines.get(key, start), message))
    if not spec.thresholds:
        problem("thresholds", f"expected at least one threshold (here or in {spec.source or 'the task'}): a gate that checks nothing cannot fail, found none")
    if len(problems) > count:
        return None
    return GateTask(spec, f"{path}:{start}")


def _task_argument(name: str, gate_dir: str, registry_dir: str) -> str:
    """A registered name as it is; a path relative to the gate file (as a task file's `file:` is); a bare word that is
    neither as it is, so that load_task names the registered tasks and the closest one."""
    bare = "/" not in name and os.sep not in name
    if bare and os.path.isfile(os.path.join(registry_dir, f"{name}.yaml")):
        return name
    path = os.path.join(gate_dir, os.path.expanduser(name))
    return name if bare and not (os.path.exists(path) or os.path.exists(path + ".idx")) else path


def _load(path: str) -> tuple[dict, yaml.MappingNode]:
    """(the YAML mapping, its node for line numbers); a file that is not a YAML mapping raises at once."""
    data, root = load_yaml(path)
    if not isinstance(data, dict):
        raise MegatronSotaError(f"{path}: expected a mapping with 'tasks' (and 'description', 'safety'), found {type(data).__name__}")
    return data, root


def _key_lines(node: yaml.MappingNode, path: str, prefix: str, problems: list[tuple[int, str]]) -> dict:
    """Key -> the line it is first given on; a key given twice is a problem."""
    lines, twice = key_lines(node, path, prefix)
    problems.extend((line, message) for line, _, message in twice)
    return lines


def _value_node(node: yaml.MappingNode, key: str) -> yaml.Node:
    return next(value for key_node, value in node.value if key_node.value == key)


def _unknown(path: str, line: int, key: str, known: tuple[str, ...]) -> str:
    hint = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
    return f"{path}:{line}: key '{key}': unknown key; expected one of {', '.join(known)}" + (f" (did you mean {hint[0]!r}?)" if hint else "")


def _indent(err: Exception) -> str:
    return str(err).replace("\n", "\n  ")
