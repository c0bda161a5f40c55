"""What an evaluation task is (type, data file, prompt templates, thresholds) and the registry that names them.

A task is a YAML file in conf/eval/tasks/ (so a team shares one definition of "arithmetic_em, 3-shot"),
or, for a one-off run, a bare JSONL file or Megatron .bin/.idx prefix given on the command line.
A passkey task has no data file: its samples are generated (passkey.py), so it exists only as a YAML file.
A YAML file is typed by task_file.py; the checks here need the whole task (its type, file, templates).
Every mistake in a YAML file is reported at once, each with the file, line and key, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import string
from collections.abc import Callable
from dataclasses import dataclass, field

from megatron_sota.config.evaluation import TaskSettings
from megatron_sota.config.files import conf_dir
from megatron_sota.data.shard_checks import check_index_file
from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation.task_file import read_task_file

TASK_TYPES = ("multiple_choice", "exact_match", "perplexity", "passkey", "refusal", "code")
LOWER_IS_BETTER = ("perplexity", "bits_per_byte", "over_refusal_rate")
"""Metrics (and their "<metric>/<category>" rows) whose plain-number threshold is a maximum; every other one is a minimum."""
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "multiple_choice": ("acc", "acc_norm", "acc_bytes"),
    "exact_match": ("exact_match",),
    "perplexity": ("perplexity", "bits_per_byte"),
    "passkey": ("exact_match",),
    "refusal": ("refusal_rate", "over_refusal_rate"),
    "code": (),
}
"""The metrics each task type always reports; `reported_metrics` adds those of its settings (pass@k, per subject...)."""
FORMATS: dict[str, tuple[str, ...]] = {
    "mmlu": ("multiple_choice",),
    "gpqa": ("multiple_choice", "exact_match"),
    "aime": ("exact_match",),
    "humaneval": ("code",),
}
"""A benchmark's published record format -> the task types that read it (evaluation/benchmark_files.py)."""
PASSKEY_KEYS = ("lengths", "depths", "samples", "filler")
"""Keys only a passkey task reads."""
NOT_FOR_PASSKEY = ("file", "format", "num_fewshot", "fewshot_seed", "template", "choice_template", "target_template", "fewshot_separator", "preamble")
"""Keys a passkey task would ignore: its prompts are generated, not read or templated."""
REFUSAL_KEYS = ("categories", "refusal_phrases")
"""Keys only a refusal task reads."""
NOT_FOR_REFUSAL = ("format", "num_fewshot", "fewshot_seed", "choice_template", "target_template", "fewshot_separator", "preamble")
"""Keys a refusal task would ignore: each prompt is asked alone (zero-shot) and answered freely."""
NOT_FOR_CODE = ("num_fewshot", "fewshot_seed", "template", "choice_template", "target_template", "fewshot_separator", "preamble", "stop")
"""Keys a code task would ignore: its prompt is the problem's own (a function to complete), cut where a new top-level
statement starts (code_execution.py)."""
SAMPLING_KEYS = ("num_samples", "pass_at", "temperature", "top_p")
"""Keys only the tasks that generate answers to score (exact_match, code) read."""
NOT_FOR = {"passkey": NOT_FOR_PASSKEY, "refusal": NOT_FOR_REFUSAL, "code": NOT_FOR_CODE}
"""Type -> the keys it would ignore (an error in its task file)."""
READ_BY: dict[str, tuple[str, ...]] = {
    **{key: ("passkey",) for key in PASSKEY_KEYS},
    **{key: ("refusal",) for key in REFUSAL_KEYS},
    **{key: ("exact_match", "code") for key in SAMPLING_KEYS},
    "seed": ("passkey", "exact_match", "code", "multiple_choice"),
}
"""Key -> the only types that read it (an error in any other type's task file)."""
NO_FEWSHOT_TYPES = ("perplexity", "passkey", "refusal", "code")
"""Task types that never show few-shot examples: a num_fewshot for them would be ignored silently."""
CHAT_TYPES = ("exact_match", "refusal", "code")
"""The task types whose answers are generated, so that a chat template can frame them (`chat: true`)."""
THRESHOLDS_EXPECTED = "a mapping of metric name to number (a bound, see LOWER_IS_BETTER) or to {min: number, max: number} (either or both)"
REGISTRY_DIR = conf_dir("eval", "tasks")
ANSWER_FIELDS = ("answer", "answer_index", "answer_letter", "choice", "letter")
"""Template fields that give the gold answer away; the question `template` may not name them."""


@dataclass(frozen=True)
class TaskSpec(TaskSettings):
    """One task, fully resolved: `path` is absolute and exists, templates are well-formed."""

    name: str
    type: str
    """One of TASK_TYPES."""
    path: str
    """Absolute path of a JSONL file or, for perplexity only, a Megatron .bin/.idx prefix (no extension); "" for passkey."""
    source: str = field(default="", compare=False)
    """The task YAML it was read from ("" for a task given as a data path), for messages; not part of the task."""

    def __post_init__(self) -> None:
        if self.type not in TASK_TYPES:
            raise MegatronSotaError(f"task {self.name}: type: expected one of {', '.join(TASK_TYPES)}, found {self.type!r}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        for key in ("stop", "lengths", "depths", "categories", "pass_at"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        if self.type == "code" and self.format is None:  # problems have one form, HumanEval's
            object.__setattr__(self, "format", "humaneval")
        if self.refusal_phrases is not None:
            object.__setattr__(self, "refusal_phrases", tuple(self.refusal_phrases))

    @property
    def is_megatron_prefix(self) -> bool:
        """True when `path` is a tokenized .bin/.idx prefix (perplexity on token ids, no text)."""
        return not self.path.endswith(".jsonl") and _is_prefix(self.path)


_IGNORED_BY = {
    "passkey": "a passkey task generates its prompts",
    "refusal": "a refusal task asks each prompt alone",
    "code": "a code task prompts with each problem's own prompt",
}


def reported_metrics(spec: TaskSpec) -> tuple[str, ...]:
    """The metrics `spec` reports (thresholds may name these): its type's, pass@k of its sampling settings; per-category
    and per-subject rows ("<metric>/<name>") are checked against the data when it is read."""
    metrics = TASK_METRICS[spec.type]
    if spec.type == "code" or (spec.type == "exact_match" and spec.num_samples > 1):  # greedy exact_match is pass@1
        metrics = (*metrics, *(f"pass@{k}" for k in spec.pass_at))
    if spec.format == "mmlu":
        metrics = (*metrics, "acc_macro")
    return metrics


def with_chat(spec: TaskSpec) -> TaskSpec:
    """`spec` chat-formatted when its answers are generated (tools/evaluate.py --chat); other types unchanged."""
    return dataclasses.replace(spec, chat=True) if spec.type in CHAT_TYPES else spec


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
    """Reads and checks one registry file; every problem is reported at once, each naming the file, line and key."""
    task_file = read_task_file(yaml_file)
    data, values, problems, where = task_file.data, task_file.values, task_file.problems, task_file.where

    declared_type = values.get("type")
    if declared_type is not None and declared_type not in TASK_TYPES:
        problems["type"] = f"{where('type')}: expected one of {', '.join(TASK_TYPES)}, found {declared_type!r}"
    final_type = task_type or declared_type
    for key in [k for k in values if k not in problems]:  # a key the task's type never reads would be ignored silently
        if key in NOT_FOR.get(final_type, ()):
            problems[key] = f"{where(key)}: {_IGNORED_BY[final_type]}: expected no '{key}', found {data[key]!r}"
        readers = READ_BY.get(key)
        if readers is not None and final_type in TASK_TYPES and final_type not in readers:
            problems[key] = f"{where(key)}: only {', '.join(readers)} tasks read it: expected no '{key}' for type {final_type}, found {data[key]!r}"
    if final_type != "passkey" and values.get("file") is None and "file" not in problems:
        problems["file"] = f"{where('file')}: expected it (required for type {final_type or 'multiple_choice, exact_match or perplexity'}), found nothing"
    path = _resolve_file(values["file"], yaml_file, where, problems) if values.get("file") is not None and "file" not in problems else None
    if values.get("filler") is not None and "filler" not in problems:
        values["filler"] = os.path.normpath(os.path.join(os.path.dirname(yaml_file), os.path.expanduser(values["filler"])))
        if not os.path.isfile(values["filler"]):
            problems["filler"] = f"{where('filler')}: expected a text file (relative to {os.path.dirname(yaml_file)}), found no file {values['filler']}"
    if "stop" in values:
        stop = values["stop"]
        if isinstance(stop, str):
            values["stop"] = stop = (stop,)
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
            problems["stop"] = f"{where('stop')}: expected a non-empty string or a list of them, found {data['stop']!r}"
    if "thresholds" in values:
        try:
            values["thresholds"] = typed_thresholds(values["thresholds"])
        except ValueError as err:
            problems["thresholds"] = f"{where('thresholds')}: expected {THRESHOLDS_EXPECTED}, found {data['thresholds']!r}{err}"

    spec = None
    if "type" not in problems:  # the checks of the whole task, on every key that passed its own
        settings = {k: v for k, v in values.items() if k not in problems and k not in ("type", "file")}
        if num_fewshot is not None:
            settings["num_fewshot"] = num_fewshot
        spec = TaskSpec(name=name, type=final_type, path=path or "", source=yaml_file, **settings)
        for key, message in spec_problems(spec, where):
            problems.setdefault(key, message)
    if problems:
        raise MegatronSotaError("\n".join(problems[k] for k in sorted(problems, key=task_file.line)))
    return spec


def _resolve_file(file_value: str, yaml_file: str, where: Callable[[str], str], problems: dict[str, str]) -> str | None:
    """The absolute JSONL path or .bin/.idx prefix `file` names, relative to the YAML file."""
    path = os.path.normpath(os.path.join(os.path.dirname(yaml_file), os.path.expanduser(file_value)))
    if path.endswith((".bin", ".idx")):
        path = path[: -len(".bin")]
    if os.path.isfile(path) and not path.endswith(".jsonl"):
        problems["file"] = f"{where('file')}: expected a .jsonl file or a .bin/.idx prefix, found {os.path.basename(path)!r}"
    elif not os.path.isfile(path) and not _is_prefix(path):
        halves = [path + ext for ext in (".bin", ".idx") if os.path.isfile(path + ext)]
        found = f"{halves[0]} without its other half" if halves else f"no file {path}"
        problems["file"] = (
            f"{where('file')}: expected an existing JSONL file or .bin/.idx prefix "
            f"(relative to {os.path.dirname(yaml_file)}), found {found}"
        )
    return path


def _check_spec(spec: TaskSpec, origin: str) -> TaskSpec:
    """A task given as a path on the command line: the checks of spec_problems, all reported at once."""
    problems = spec_problems(spec, lambda key: f"task {spec.name} ({origin}): {key}")
    if problems:
        raise MegatronSotaError("\n".join(message for _, message in problems))
    return spec


def spec_problems(spec: TaskSpec, at: Callable[[str], str]) -> list[tuple[str, str]]:
    """(key, message) for what needs the final type (after a command-line override): data format, templates, thresholds."""
    problems = []
    if spec.type == "passkey":
        problems.extend(_passkey_problems(spec, at))
    if spec.is_megatron_prefix and spec.type != "perplexity":
        problems.append(("file", f"{at('file')}: a .bin/.idx prefix holds token ids, only for type 'perplexity', found type {spec.type!r}"))
    elif spec.is_megatron_prefix:
        try:  # before megatron-core opens it: its half-built reader would print a second traceback
            check_index_file(spec.path + ".idx")
        except MegatronSotaError as err:
            problems.append(("file", f"{at('file')}: {err}"))
    if spec.type == "perplexity" and spec.num_fewshot:
        problems.append(("num_fewshot",
            f"{at('num_fewshot')}: perplexity scores whole documents without few-shot examples: expected 0, found {spec.num_fewshot}"
        ))
    for key in ("template", "choice_template", "target_template", "preamble"):
        try:
            names = _template_fields(getattr(spec, key), at(key))
        except MegatronSotaError as err:
            problems.append((key, str(err)))
            continue
        leaked = sorted(names & set(ANSWER_FIELDS)) if key in ("template", "preamble") else []
        if leaked:
            problems.append((key,
                f"{at(key)}: the question template must not show the answer: expected no field among "
                f"{', '.join(ANSWER_FIELDS)}, found {{{leaked[0]}}}"
            ))
    problems.extend(_format_problems(spec, at))
    problems.extend(_sampling_problems(spec, at))
    if spec.chat and spec.type not in CHAT_TYPES:
        problems.append(("chat", f"{at('chat')}: chat formats tasks whose answers are generated ({', '.join(CHAT_TYPES)}): expected false for type {spec.type}, found true"))
    reported = reported_metrics(spec)
    if spec.type == "refusal":
        problems.extend(_refusal_problems(spec, at))
        reported = (*reported, *(f"{m}/{c}" for m in reported for c in spec.categories))
    for metric in spec.thresholds:
        if metric not in reported and not (spec.format == "mmlu" and metric.startswith("acc/")):
            problems.append(("thresholds",
                f"{at('thresholds')}: metric {metric!r}: expected one that {spec.type} tasks report "
                f"({', '.join(reported)}), found {metric!r}"
            ))
    return problems


def threshold_bounds(metric: str, bound: object) -> tuple[float | None, float | None]:
    """(minimum, maximum) of one threshold: a number is a maximum for LOWER_IS_BETTER metrics (and their
    "<metric>/<category>" rows), else a minimum; a {min, max} mapping says which."""
    if isinstance(bound, dict):
        return bound.get("min"), bound.get("max")
    return (None, float(bound)) if metric.split("/", 1)[0] in LOWER_IS_BETTER else (float(bound), None)


def typed_thresholds(thresholds: object) -> dict[str, float | dict[str, float]]:
    """metric -> float, or -> {"min"?: float, "max"?: float}; ValueError (" (why)", or "") for anything else."""
    if not isinstance(thresholds, dict) or not all(isinstance(k, str) for k in thresholds):
        raise ValueError("")
    typed = {}
    for metric, bound in thresholds.items():
        if isinstance(bound, dict):
            if not bound or set(bound) - {"min", "max"} or not all(_is_number(v) for v in bound.values()):
                raise ValueError(f" (metric {metric!r})")
            if len(bound) == 2 and bound["min"] > bound["max"]:
                raise ValueError(f" (metric {metric!r}: min above max)")
            typed[metric] = {k: float(v) for k, v in bound.items()}
        elif _is_number(bound):
            typed[metric] = float(bound)
        else:
            raise ValueError(f" (metric {metric!r})")
    return typed


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _format_problems(spec: TaskSpec, at: Callable[[str], str]) -> list[tuple[str, str]]:
    """A benchmark format fits its task types and a JSONL file; a code task reads only the HumanEval form."""
    if spec.format is None:
        return []
    if spec.format not in FORMATS:
        hint = difflib.get_close_matches(spec.format, list(FORMATS), n=1)
        return [("format", f"{at('format')}: expected one of {', '.join(FORMATS)} or null, found {spec.format!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))]
    if spec.type not in FORMATS[spec.format]:
        return [("format", f"{at('format')}: {spec.format} records make {', '.join(FORMATS[spec.format])} tasks: expected one of those types, found type {spec.type}")]
    if spec.path and not spec.path.endswith(".jsonl"):
        return [("file", f"{at('file')}: {spec.format} records are read from JSONL: expected a .jsonl file, found {spec.path}")]
    return []


def _sampling_problems(spec: TaskSpec, at: Callable[[str], str]) -> list[tuple[str, str]]:
    """pass@k needs k <= num_samples, each k once; several samples of a greedy decoder would all be the same answer."""
    if spec.type not in ("exact_match", "code"):
        return []
    problems = []
    ks = list(spec.pass_at)
    if not ks or len(set(ks)) != len(ks) or max(ks) > spec.num_samples:
        problems.append(("pass_at", f"{at('pass_at')}: expected distinct values from 1 to num_samples ({spec.num_samples}), found {ks}"))
    if spec.num_samples > 1 and spec.temperature == 0:
        problems.append(("temperature", f"{at('temperature')}: {spec.num_samples} samples of greedy decoding are one answer repeated: expected temperature > 0 with num_samples > 1, found 0"))
    if spec.top_p <= 0:
        problems.append(("top_p", f"{at('top_p')}: expected a number in (0, 1], found {spec.top_p}"))
    return problems


def _refusal_problems(spec: TaskSpec, at: Callable[[str], str]) -> list[tuple[str, str]]:
    """Categories are names (they become metric names "refusal_rate/<category>"), each once; phrases non-blank."""
    problems = []
    names = list(spec.categories)
    if not names or len(set(names)) != len(names) or not all(isinstance(c, str) and c.isidentifier() for c in names):
        problems.append(("categories", f"{at('categories')}: expected a non-empty list of distinct names (letters, digits, _), found {names}"))
    phrases = spec.refusal_phrases
    if phrases is not None and (not phrases or not all(isinstance(p, str) and p.strip() for p in phrases)):
        problems.append(("refusal_phrases", f"{at('refusal_phrases')}: expected a non-empty list of non-blank strings or null, found {phrases}"))
    return problems


def _passkey_problems(spec: TaskSpec, at: Callable[[str], str]) -> list[tuple[str, str]]:
    """A passkey task needs lengths and depths, each value once (one report cell per pair), and no data file."""
    problems = []
    if spec.path:
        problems.append(("file", f"{at('file')}: passkey samples are generated, not read: expected a task YAML without 'file', found {spec.path}"))
    for key in ("lengths", "depths"):
        values = getattr(spec, key)
        if not values:
            problems.append((key, f"{at(key)}: expected a non-empty list (required for type passkey), found {list(values)}"))
        elif len(set(values)) != len(values):
            problems.append((key, f"{at(key)}: expected each value once, found {list(values)}"))
    return problems


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

