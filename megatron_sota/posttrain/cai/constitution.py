"""The constitution of tools/cai.py: principles read from YAML and checked, every problem of the file at once.

It reads and checks only; the prompts built from the principles are in conversations.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib import resources
from typing import List, Optional, Sequence

from megatron_sota.errors import MegatronSotaError

FIELDS = ("name", "critique_request", "revision_request", "comparison_question")
"""Required text fields of a principle; `area` is optional."""
SHIPPED = "constitution.yaml"


@dataclass(frozen=True)
class Principle:
    name: str
    critique_request: str
    revision_request: str
    comparison_question: str
    area: str = ""


def shipped_constitution() -> str:
    """Path of the constitution shipped in this package (megatron_sota/posttrain/cai/constitution.yaml)."""
    return str(resources.files("megatron_sota.posttrain.cai").joinpath(SHIPPED))


def load_constitution(path: Optional[str] = None) -> List[Principle]:
    """The principles of `path` (None: the shipped constitution); a MegatronSotaError listing every problem."""
    import yaml

    path = path or shipped_constitution()
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as err:
        raise MegatronSotaError(f"constitution {path}: expected a readable YAML file, found {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise MegatronSotaError(f"constitution {path}: expected YAML, found {err}") from None
    entries = data.get("principles") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        found = "an empty file" if data is None else f"principles: {entries!r}" if isinstance(data, dict) else type(data).__name__
        raise MegatronSotaError(f"constitution {path}: expected a non-empty list under 'principles', found {found}")
    problems: List[str] = []
    principles = [_principle(entry, f"{path}:principle {number}", problems) for number, entry in enumerate(entries, start=1)]
    seen: dict = {}
    for number, entry in enumerate(entries, start=1):
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and name in seen:
            problems.append(f"{path}:principle {number}: name {name!r}: expected a unique name, found it also at principle {seen[name]}")
        seen.setdefault(name, number)
    if problems:
        raise MegatronSotaError(f"constitution {path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return principles  # type: ignore[return-value]


def _principle(entry: object, where: str, problems: List[str]) -> Optional[Principle]:
    if not isinstance(entry, dict):
        problems.append(f"{where}: expected a mapping with fields {', '.join(FIELDS)}, found {type(entry).__name__} {entry!r}")
        return None
    name = entry.get("name")
    if isinstance(name, str) and name.strip():
        where = f"{where} ({name})"
    before = len(problems)
    for field in FIELDS:
        value = entry.get(field)
        if not isinstance(value, str) or not value.strip():
            found = "nothing (missing)" if field not in entry else f"{value!r}"
            problems.append(f"{where}: field '{field}': expected a non-empty string, found {found}")
    area = entry.get("area", "")
    if not isinstance(area, str):
        problems.append(f"{where}: field 'area': expected a string, found {area!r}")
    unknown = sorted(set(entry) - set(FIELDS) - {"area"})
    if unknown:
        problems.append(f"{where}: expected only fields {', '.join(FIELDS)}, area; found also {', '.join(map(str, unknown))}")
    if len(problems) > before:
        return None
    return Principle(*(entry[field].strip() for field in FIELDS), area=area.strip())


def sample_principles(principles: Sequence[Principle], count: int, rng: random.Random) -> List[Principle]:
    """`count` principles drawn by `rng`: without replacement while the constitution lasts, then again from all."""
    drawn: List[Principle] = []
    while len(drawn) < count:
        drawn.extend(rng.sample(list(principles), min(len(principles), count - len(drawn))))
    return drawn
