"""Reading post-training JSONL files (TRL's formats) into checked records, every problem of every file at once.

It reads and checks text only; it must not tokenize (chat_template.py turns records into token ids).

SFT files hold one record per line, either `{"messages": [{"role", "content"}, ...]}` (the whole conversation;
SFTRecord.prompt is () and .completion the whole conversation) or `{"prompt", "completion"}` (the completion is
trained). Preference files hold `{"prompt", "chosen", "rejected"}` with an optional numeric `margin`;
NeMo-Aligner's `chosen_response` / `rejected_response` are accepted for `chosen` / `rejected`. A prompt or a
completion may be a string (it becomes one user, resp. assistant, message) or a list of messages, as in TRL.
Always `messages == prompt + completion`. Roles are system, user and assistant; only `role` and `content` of a
message are kept. A record must have an assistant message to train on (in its completion for prompt/completion
and preference records), and no assistant message may be empty. Blank lines are skipped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

from megatron_sota.errors import MegatronSotaError

ROLES = ("system", "user", "assistant")
MAX_LISTED = 50
"""Problems listed in one error; the rest are counted (a wholly wrong file would otherwise print every line)."""
CHOSEN_KEYS = ("chosen", "chosen_response")
REJECTED_KEYS = ("rejected", "rejected_response")

Messages = tuple  # of {"role": str, "content": str} dicts


@dataclass(frozen=True)
class SFTRecord:
    """One training example: `messages` is what the template renders; `completion` is the part that may be trained."""

    prompt: Messages
    """The messages before the trained part; () for `messages` records."""
    completion: Messages
    """The messages after the prompt: the whole conversation for `messages` records."""
    messages: Messages
    """prompt + completion."""
    where: str
    """"path:line" of the record, for error messages."""


@dataclass(frozen=True)
class PreferenceRecord:
    """A prompt with a preferred (`chosen`) and a dispreferred (`rejected`) completion."""

    prompt: Messages
    chosen: Messages
    rejected: Messages
    margin: Optional[float]
    """How much more `chosen` is preferred (reward-model loss); None when the record has none."""
    where: str
    task: Optional[str] = None
    """The record's optional `task` label (reports group held-out accuracy by it); no effect on training."""


def read_sft_records(paths: Sequence[str]) -> list[SFTRecord]:
    """Every record of the SFT files `paths`, in order; a MegatronSotaError listing every problem of every file."""
    return read_records(paths, _sft_record)


def read_preference_records(paths: Sequence[str]) -> list[PreferenceRecord]:
    """Every record of the preference files `paths`, in order; a MegatronSotaError listing every problem."""
    return read_records(paths, _preference_record)


def read_records(paths: Sequence[str], parse: Callable[[dict, str, list[str]], Any]) -> list:
    if not paths:
        raise MegatronSotaError("post-training data: expected at least one JSONL file, found an empty list")
    records: list = []
    problems: list[str] = []
    for path in paths:
        count = 0
        for where, value in jsonl_lines(path, problems):
            count += 1
            before = len(problems)
            if not isinstance(value, dict):
                problems.append(f"{where}: expected a JSON object, found {show_value(value)}")
                continue
            record = parse(value, where, problems)
            if len(problems) == before:
                records.append(record)
        if count == 0 and not any(p.startswith(f"{path}:") for p in problems):
            problems.append(f"{path}: expected one JSON object per line, found no records")
    if problems:
        shown = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise MegatronSotaError(
            f"post-training data: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more
        )
    return records


def jsonl_lines(path: str, problems: list[str]):
    """("path:line", parsed JSON) of every non-blank line; unreadable files and lines go to `problems`."""
    try:
        with open(path, "rb") as handle:
            lines = handle.readlines()
    except OSError as err:
        problems.append(f"{path}: expected a readable JSONL file, found {err.strerror or err}")
        return
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            problems.append(f"{where}: expected UTF-8 text, found byte {raw[err.start]:#04x}")
            continue
        except json.JSONDecodeError as err:
            found = f"invalid JSON ({err.msg}, column {err.colno})"
            problems.append(f"{where}: expected one JSON object per line, found {found}")
            continue
        yield where, value


def _sft_record(record: dict, where: str, problems: list[str]) -> Optional[SFTRecord]:
    if "messages" in record:
        messages = _messages(record, "messages", where, problems)
        if messages is not None:
            _needs_assistant(messages, "messages", where, problems)
            return SFTRecord((), messages, messages, where)
        return None
    if "prompt" in record or "completion" in record:
        prompt = read_turns(record, "prompt", "user", where, problems)
        completion = read_turns(record, "completion", "assistant", where, problems)
        if prompt is None or completion is None:
            return None
        _needs_assistant(completion, "completion", where, problems)
        return SFTRecord(prompt, completion, prompt + completion, where)
    problems.append(f"{where}: expected field 'messages', or 'prompt' and 'completion', found {_keys(record)}")
    return None


def _preference_record(record: dict, where: str, problems: list[str]) -> Optional[PreferenceRecord]:
    prompt = read_turns(record, "prompt", "user", where, problems)
    sides = []
    for keys in (CHOSEN_KEYS, REJECTED_KEYS):
        present = [key for key in keys if key in record]
        if len(present) > 1:
            problems.append(f"{where}: expected one of fields {' or '.join(map(repr, keys))}, found both")
            sides.append(None)
            continue
        key = present[0] if present else keys[0]
        side = read_turns(record, key, "assistant", where, problems)
        if side is not None:
            _needs_assistant(side, key, where, problems)
        sides.append(side)
    margin = record.get("margin")
    if margin is not None and (
        isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin)
    ):
        problems.append(f"{where}: field 'margin': expected a finite number, found {show_value(margin)}")
        return None
    task = record.get("task")
    if task is not None and not isinstance(task, str):
        problems.append(f"{where}: field 'task': expected a string, found {show_value(task)}")
        return None
    chosen, rejected = sides
    if prompt is None or chosen is None or rejected is None:
        return None
    return PreferenceRecord(prompt, chosen, rejected, None if margin is None else float(margin), where, task)


def read_turns(record: dict, key: str, role: str, where: str, problems: list[str]) -> Optional[Messages]:
    """A prompt or completion: a non-empty string (one `role` message) or a list of messages."""
    value = record.get(key)
    if isinstance(value, str):
        if not value.strip():
            problems.append(
                f"{where}: field '{key}': expected a non-empty string or list of messages, found {show_value(value)}"
            )
            return None
        return ({"role": role, "content": value},)
    return _messages(record, key, where, problems)


def _messages(record: dict, key: str, where: str, problems: list[str]) -> Optional[Messages]:
    value = record.get(key)
    if key not in record:
        problems.append(
            f"{where}: field '{key}': expected a string or a list of messages, found no such field "
            f"(the record has {_keys(record)})"
        )
        return None
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: field '{key}': expected a non-empty list of messages, found {show_value(value)}")
        return None
    messages = []
    before = len(problems)
    for i, message in enumerate(value):
        at = f"{where}: field '{key}[{i}]'"
        if not isinstance(message, dict):
            problems.append(f"{at}: expected a message object with 'role' and 'content', found {show_value(message)}")
            continue
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            found = "no 'role'" if "role" not in message else show_value(role)
            problems.append(f"{at}: expected role {', '.join(ROLES)}, found {found}")
        if not isinstance(content, str):
            found = "no 'content'" if "content" not in message else show_value(content)
            problems.append(f"{at}: expected 'content' a string, found {found}")
        elif role == "assistant" and not content.strip():
            problems.append(f"{at}: expected a non-empty assistant message, found {show_value(content)}")
        messages.append({"role": role, "content": content})
    return tuple(messages) if len(problems) == before else None


def _needs_assistant(messages: Messages, key: str, where: str, problems: list[str]) -> None:
    if not any(m["role"] == "assistant" for m in messages):
        roles = ", ".join(m["role"] for m in messages)
        problems.append(f"{where}: field '{key}': expected an assistant message to train on, found roles {roles}")


def _keys(record: dict) -> str:
    return f"fields {', '.join(map(repr, record))}" if record else "no fields"


def show_value(value: Any) -> str:
    """A value as the message shows it: its JSON type and spelling, shortened."""
    kind = {
        bool: "boolean", type(None): "null", str: "string", dict: "object", list: "list", int: "integer",
        float: "number",
    }
    text = json.dumps(value, ensure_ascii=False)
    return f"{kind.get(type(value), type(value).__name__)} {text if len(text) <= 60 else text[:57] + '...'}"

