"""Post-training JSONL files: TRL's formats and NeMo-Aligner's aliases are read, every bad line is named at once."""

from __future__ import annotations

import json

import pytest

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.records import (
    PreferenceRecord,
    SFTRecord,
    read_preference_records,
    read_sft_records,
)

SYSTEM = {"role": "system", "content": "Be brief."}
USER = {"role": "user", "content": "What is 2+2?"}
ASSISTANT = {"role": "assistant", "content": "4"}


def _write(path, lines) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def test_sft_formats_become_messages_with_prompt_and_completion(tmp_path):
    path = _write(tmp_path / "sft.jsonl", [
        {"messages": [SYSTEM, USER, ASSISTANT]},
        "",
        {"prompt": "What is 2+2?", "completion": "4"},
        {"prompt": [SYSTEM, USER], "completion": [ASSISTANT], "extra": 1},
    ])
    assert read_sft_records([path]) == [
        SFTRecord((), (SYSTEM, USER, ASSISTANT), (SYSTEM, USER, ASSISTANT), f"{path}:1"),
        SFTRecord((USER,), (ASSISTANT,), (USER, ASSISTANT), f"{path}:3"),
        SFTRecord((SYSTEM, USER), (ASSISTANT,), (SYSTEM, USER, ASSISTANT), f"{path}:4"),
    ]


def test_preference_records_accept_nemo_aligner_aliases_and_a_margin(tmp_path):
    wrong = {"role": "assistant", "content": "5"}
    path = _write(tmp_path / "pref.jsonl", [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "margin": 2},
        {"prompt": [USER], "chosen_response": [ASSISTANT], "rejected_response": [wrong]},
    ])
    assert read_preference_records([path]) == [
        PreferenceRecord((USER,), (ASSISTANT,), (wrong,), 2.0, f"{path}:1"),
        PreferenceRecord((USER,), (ASSISTANT,), (wrong,), None, f"{path}:2"),
    ]


def test_every_bad_sft_line_of_every_file_is_named_in_one_error(tmp_path):
    bad = _write(tmp_path / "bad.jsonl", [
        {"messages": [USER, ASSISTANT]},  # 1: fine
        '{"messages": [',  # 2
        "[1, 2]",  # 3
        {"text": "hello"},  # 4
        {"messages": [USER, {"role": "robot", "content": "x"}, ASSISTANT]},  # 5
        {"messages": [USER, {"role": "assistant", "content": "  "}]},  # 6
        {"messages": [SYSTEM, USER]},  # 7
        {"prompt": "hi"},  # 8
        {"prompt": "", "completion": "4"},  # 9
        {"messages": [USER, {"role": "assistant"}]},  # 10
        {"messages": []},  # 11
    ])
    missing = str(tmp_path / "missing.jsonl")
    empty = _write(tmp_path / "empty.jsonl", [""])
    with pytest.raises(MegatronSotaError) as caught:
        read_sft_records([bad, missing, empty])
    message = str(caught.value)
    expected = [
        f"{bad}:2: expected one JSON object per line, found invalid JSON",
        f"{bad}:3: expected a JSON object, found list [1, 2]",
        f"{bad}:4: expected field 'messages', or 'prompt' and 'completion', found fields 'text'",
        f"{bad}:5: field 'messages[1]': expected role system, user, assistant, found string \"robot\"",
        f"{bad}:6: field 'messages[1]': expected a non-empty assistant message, found string \"  \"",
        f"{bad}:7: field 'messages': expected an assistant message to train on, found roles system, user",
        f"{bad}:8: field 'completion': expected a string or a list of messages, found no such field",
        f"{bad}:9: field 'prompt': expected a non-empty string or list of messages, found string \"\"",
        f"{bad}:10: field 'messages[1]': expected 'content' a string, found no 'content'",
        f"{bad}:11: field 'messages': expected a non-empty list of messages, found list []",
        f"{missing}: expected a readable JSONL file, found No such file or directory",
        f"{empty}: expected one JSON object per line, found no records",
    ]
    for line in expected:
        assert line in message
    assert f"{bad}:1:" not in message
    assert message.startswith(f"post-training data: {len(expected)} problem(s)")


def test_every_bad_preference_line_is_named(tmp_path):
    path = _write(tmp_path / "pref.jsonl", [
        {"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"},  # 1
        {"prompt": "q", "chosen": "a", "rejected": "b", "margin": True},  # 2
        {"prompt": "q", "chosen": "a", "chosen_response": "a", "rejected": "b"},  # 3
        {"prompt": "q", "chosen": "a"},  # 4
        {"prompt": "q", "chosen": [USER], "rejected": "b"},  # 5
        {"chosen": "a", "rejected": "b"},  # 6
        {"prompt": "q", "chosen": "a", "rejected": "b", "margin": None},  # 7: fine (no margin)
        {"prompt": "q", "chosen": "a", "rejected": "b", "task": 3},  # 8
    ])
    with pytest.raises(MegatronSotaError) as caught:
        read_preference_records([path])
    message = str(caught.value)
    for line in [
        f"{path}:1: field 'margin': expected a finite number, found string \"big\"",
        f"{path}:2: field 'margin': expected a finite number, found boolean true",
        f"{path}:3: expected one of fields 'chosen' or 'chosen_response', found both",
        f"{path}:4: field 'rejected': expected a string or a list of messages, found no such field",
        f"{path}:5: field 'chosen': expected an assistant message to train on, found roles user",
        f"{path}:6: field 'prompt': expected a string or a list of messages, found no such field",
        f"{path}:8: field 'task': expected a string, found integer 3",
    ]:
        assert line in message
    assert f"{path}:7" not in message
    assert "7 problem(s)" in message
