"""RL prompt files: the ids are the chat template's prompt with the generation prompt (transformers'
apply_chat_template on the exported tokenizer), every bad record is named at once with file:line, and the
arithmetic example data is right and holds out its evaluation questions."""

from __future__ import annotations

import json
import re

import pytest

from megatron_sota.conversion.tokenizer_export import write_hf_tokenizer
from megatron_sota.data.tokenizer import build_tokenizer
from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.chat_template import ChatTemplate
from megatron_sota.posttrain.example_rl_data import PHRASINGS, write_rl_example_data
from megatron_sota.posttrain.prompt_data import read_prompt_files
from megatron_sota.posttrain.records import read_sft_records
from tests.chat_tokenizer import train_chat_tokenizer

transformers = pytest.importorskip("transformers")

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
GOOD = [
    {"prompt": "What is two plus two?", "answer": 4},
    {"prompt": [SYSTEM, {"role": "user", "content": "def add(a, b):"},
                {"role": "assistant", "content": "    return a + b"},
                {"role": "user", "content": "And now sub?"}],
     "tests": "assert sub(3, 1) == 2", "answer": "two"},
    {"prompt": "Name a colour of the sky.", "completion": "Blue."},  # post-training I's SFT format
    {"prompt": [{"role": "user", "content": "The sky?"}], "chosen": "Blue.", "rejected": "Green."},  # preferences
]


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """(ours, transformers' tokenizer of its export with the shipped chat template)."""
    root = tmp_path_factory.mktemp("prompts")
    source = train_chat_tokenizer(root)
    ours = build_tokenizer("HuggingFaceTokenizer", str(source))
    write_hf_tokenizer("HuggingFaceTokenizer", str(source), str(root / "export"),
                       chat_template=ChatTemplate.load(None, ours).text)
    return ours, transformers.AutoTokenizer.from_pretrained(str(root / "export"))


def _write(path, lines) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def _hf_prompt_ids(hf, messages) -> list:
    return hf.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=True,
                                  return_dict=True)["input_ids"]


def test_prompt_ids_are_the_chat_templates_prompt_with_the_generation_prompt(tokenizers, tmp_path):
    ours, hf = tokenizers
    path = _write(tmp_path / "prompts.jsonl", [GOOD[0], "", *GOOD[1:]])  # a blank line is skipped
    records = read_prompt_files([path], None, ours, max_prompt_tokens=200)
    assert [r.where for r in records] == [f"{path}:{n}" for n in (1, 3, 4, 5)]
    as_messages = [[{"role": "user", "content": g["prompt"]}] if isinstance(g["prompt"], str) else g["prompt"]
                   for g in GOOD]
    for record, messages in zip(records, as_messages):
        assert list(record.messages) == messages
        assert list(record.ids) == _hf_prompt_ids(hf, messages)
        assert hf.decode(record.ids).endswith("<|im_start|>assistant\n")  # the model continues as the assistant
    assert [(r.answer, r.tests) for r in records] == [
        ("4", None), ("two", "assert sub(3, 1) == 2"), (None, None), (None, None)]


def test_every_bad_prompt_record_is_named_at_once_with_its_file_and_line(tokenizers, tmp_path):
    ours, hf = tokenizers
    long_prompt = "apple " * 80
    path = _write(tmp_path / "bad.jsonl", [
        GOOD[0],                                                            # 1: fine
        "{not json",                                                        # 2
        [1, 2],                                                             # 3
        {"messages": [{"role": "user", "content": "hi"}]},                  # 4: no prompt
        {"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},  # 5
        {"prompt": "hi", "answer": [8]},                                    # 6
        {"prompt": "hi", "answer": True},                                   # 7
        {"prompt": "hi", "tests": 5},                                       # 8
        {"prompt": long_prompt, "answer": "1"},                             # 9: too long
        {"prompt": "  "},                                                   # 10
        {"prompt": [{"role": "robot", "content": "hi"}]},                   # 11
    ])
    missing = str(tmp_path / "missing.jsonl")
    limit = 40
    with pytest.raises(MegatronSotaError) as caught:
        read_prompt_files([path, missing], None, ours, max_prompt_tokens=limit)
    message = str(caught.value)
    assert message.startswith("posttrain.train_files: ")
    assert f"{path}:1:" not in message
    expected = {
        2: "expected one JSON object per line, found invalid JSON",
        3: "expected a JSON object, found list",
        4: "field 'prompt': expected a string or a list of messages, found no such field",
        5: "expected a list of messages ending with a user message .* role 'assistant'",
        6: "field 'answer': expected a non-empty string or an integer, found list",
        7: "field 'answer': expected a non-empty string or an integer, found boolean",
        8: "field 'tests': expected a non-empty string, found integer",
        9: (f"expected a prompt of at most {limit} tokens \\(train.seq_length minus posttrain.max_new_tokens\\), "
            f"found {len(_hf_prompt_ids(hf, [{'role': 'user', 'content': long_prompt}]))} tokens"),
        10: "field 'prompt': expected a non-empty string",
        11: "expected role system, user, assistant, found string \"robot\"",
    }
    for line, text in expected.items():
        assert re.search(f"{re.escape(path)}:{line}: [^\n]*{text}", message), (line, message)
    assert f"{missing}: expected a readable JSONL file" in message


def test_no_prompt_files_an_empty_file_and_no_room_for_a_prompt_are_refused(tokenizers, tmp_path):
    ours, _ = tokenizers
    with pytest.raises(MegatronSotaError, match="^my.key: expected at least one JSONL file of prompts, found an empty"):
        read_prompt_files([], None, ours, 64, key="my.key")
    empty = _write(tmp_path / "empty.jsonl", [""])
    with pytest.raises(MegatronSotaError, match=f"{re.escape(empty)}: expected one JSON object per line, found no"):
        read_prompt_files([empty], None, ours, 64)
    good = _write(tmp_path / "good.jsonl", [GOOD[0]])
    with pytest.raises(MegatronSotaError, match=r"max_new_tokens at least 1\), found -8"):
        read_prompt_files([good], None, ours, -8)


def _text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _operands(question: str) -> tuple:
    a, b = map(int, re.findall(r"\d+", question))
    return a, b


def test_arithmetic_example_data_is_right_holds_out_its_pairs_and_loads(tokenizers, tmp_path):
    ours, _ = tokenizers
    data = write_rl_example_data(str(tmp_path / "a"), seed=7, train_prompts=300, sft_examples=200)
    again = write_rl_example_data(str(tmp_path / "again"), seed=7, train_prompts=300, sft_examples=200)
    assert [_text(p) for p in vars(data).values()] == [_text(p) for p in vars(again).values()]
    train = read_prompt_files([data.prompts_train], None, ours, 64)
    valid = read_prompt_files([data.prompts_valid], None, ours, 64)
    sft = read_sft_records([data.sft_train])
    assert (len(train), len(valid), len(sft)) == (300, 20, 200)  # 100 operand pairs, a fifth held out
    for record in train + valid:
        a, b = _operands(record.messages[-1]["content"])
        assert record.answer == str(a + b)
    sft_pairs = set()
    for record in sft:
        user, assistant = record.messages
        a, b = _operands(user["content"])
        assert (user["role"], assistant["role"], assistant["content"]) == ("user", "assistant", str(a + b))
        sft_pairs.add((a, b))
    train_pairs = {_operands(r.messages[-1]["content"]) for r in train}
    valid_pairs = [_operands(r.messages[-1]["content"]) for r in valid]
    assert len(set(valid_pairs)) == len(valid_pairs) == 20  # every held-out pair once
    assert not set(valid_pairs) & (train_pairs | sft_pairs)
    assert len(train_pairs | set(valid_pairs)) == 100  # the training prompts cover every other pair
    used = {re.sub(r"\d+", "{}", r.messages[-1]["content"]) for r in train}
    assert used == {p.replace("{a}", "{}").replace("{b}", "{}") for p in PHRASINGS}
    other = write_rl_example_data(str(tmp_path / "b"), seed=8, train_prompts=300, sft_examples=200)
    assert _text(other.prompts_valid) != _text(data.prompts_valid)
