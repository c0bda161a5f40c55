"""Prompts for generation: reading a JSONL prompt file, tokenizing a prompt and fitting it into the model's context."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import List, Sequence, Set, Tuple

from megatron_sota.errors import MegatronSotaError

OVERFLOW_POLICIES = ("keep_end", "keep_start", "error")


@dataclass(frozen=True)
class Prompt:
    id: object
    """The record's "id" when it has one, else its line number."""
    text: str


def read_prompt_file(path: str) -> List[Prompt]:
    """One JSON object per line with a non-empty string "prompt" (and optionally "id"); every bad line is named at once."""
    prompts, problems = [], []
    try:
        handle = open(path, encoding="utf-8")
    except OSError as err:
        raise MegatronSotaError(f"--prompt-file {path}: {err.strerror}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"{path}:{number}: not valid JSON ({err.msg})")
                continue
            text = record.get("prompt") if isinstance(record, dict) else None
            if not isinstance(text, str) or not text:
                found = "no 'prompt' field" if not isinstance(record, dict) or "prompt" not in record else f"{text!r}"
                problems.append(f"{path}:{number}: field 'prompt': expected a non-empty string, found {found}")
                continue
            prompts.append(Prompt(record.get("id", number), text))
    if problems:
        raise MegatronSotaError("\n".join(problems))
    if not prompts:
        raise MegatronSotaError(f"{path}: no prompts (expected JSON lines with a 'prompt' field)")
    return prompts


def fit_to_context(ids: Sequence[int], limit: int, policy: str) -> Tuple[List[int], int]:
    """(ids that fit in `limit` tokens, how many were dropped) under keep_end, keep_start or error."""
    if policy not in OVERFLOW_POLICIES:
        raise MegatronSotaError(f"overflow policy {policy!r}: expected one of {', '.join(OVERFLOW_POLICIES)}")
    ids = list(ids)
    dropped = max(0, len(ids) - limit)
    if not dropped:
        return ids, 0
    if policy == "error":
        raise MegatronSotaError(f"the prompt has {len(ids)} tokens, more than the {limit} that fit in the model's context")
    return (ids[dropped:] if policy == "keep_end" else ids[:limit]), dropped


def _special_ids(tokenizer) -> Set[int]:
    """The tokenizer's end-of-document, bos, eos and pad ids (those it defines)."""
    ids = set()
    for name in ("eod", "eos", "bos", "pad"):
        try:
            ids.add(int(getattr(tokenizer, name)))
        except (AttributeError, NotImplementedError, MegatronSotaError):
            continue  # the tokenizer has no such token
    return ids


def prompt_ids(tokenizer, prompt: Prompt, limit: int, overflow: str) -> Tuple[List[int], int]:
    """(token ids fitted into `limit`, tokens dropped). A prompt of special tokens only (e.g. a
    tokenizer that reads "<|endoftext|>" as end-of-document) has no text to continue: refused."""
    ids = tokenizer.tokenize(prompt.text)
    if not ids:
        raise MegatronSotaError(f"prompt {prompt.id}: expected text that tokenizes to at least one token, found none")
    special = _special_ids(tokenizer)
    if all(i in special for i in ids):
        raise MegatronSotaError(
            f"prompt {prompt.id}: expected text to continue, found only special tokens {ids[:8]} "
            f"(end-of-document/bos/eos/pad ids {sorted(special)})"
        )
    try:
        return fit_to_context(ids, limit, overflow)
    except MegatronSotaError as err:
        raise MegatronSotaError(f"prompt {prompt.id}: {err}") from None
