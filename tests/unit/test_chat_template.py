"""Chat templates: our ids and trained tokens equal TRL's SFT pipeline (assistant_only_loss) and transformers'
apply_chat_template on the exported tokenizer; records a template cannot train on are named with path:line."""

from __future__ import annotations

import json

import pytest

from megatron_sota.conversion.tokenizer_export import write_hf_tokenizer
from megatron_sota.data.tokenizer import build_tokenizer
from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.chat_template import (
    ChatTemplate,
    encode_preference,
    encode_sft,
    encode_sft_records,
)
from megatron_sota.posttrain.records import read_preference_records, read_sft_records
from tests.chat_tokenizer import train_chat_tokenizer

transformers = pytest.importorskip("transformers")

SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
CONVERSATIONS = [
    {"messages": [SYSTEM, {"role": "user", "content": "What is two plus two?"},
                  {"role": "assistant", "content": "Two plus two is four."},
                  {"role": "user", "content": "And the sky?"},
                  {"role": "assistant", "content": "The sky is blue,\non a clear day.  "}]},
    {"messages": [{"role": "user", "content": "def add(a, b):"},
                  {"role": "assistant", "content": "    return a + b"}]},
]
PROMPT_COMPLETIONS = [
    {"prompt": "Name a colour of the sky.", "completion": "Blue."},
    {"prompt": [SYSTEM, {"role": "user", "content": "What is two plus two?"}],
     "completion": [{"role": "assistant", "content": "Four."}]},
]
# A prompt rendered alone ends with a space that, inside prompt + completion, merges into the completion's
# first word (" two" is one token of the test tokenizer): the prompt's ids are then no prefix of the whole (TRL #2054).
SPACE_BEFORE_REPLY = (
    "{% for m in messages %}{{ '<|im_start|>' + m.role + ': ' + m.content + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant: ' }}{% endif %}"
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    source = train_chat_tokenizer(root)
    ours = build_tokenizer("HuggingFaceTokenizer", str(source))
    template = ChatTemplate.load(None, ours)
    export = root / "export"
    write_hf_tokenizer("HuggingFaceTokenizer", str(source), str(export), chat_template=template.text)
    return root, ours, template, export


def _records(tmp_path, rows):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return read_sft_records([str(path)])


def _trl_labels(rows, source, template, tmp_path):
    """labels of TRL 1.16's SFTTrainer (assistant_only_loss=True) as its collator hands them to the model."""
    datasets = pytest.importorskip("datasets")
    trl = pytest.importorskip("trl")
    processing = transformers.AutoTokenizer.from_pretrained(str(source))
    processing.chat_template = template.text
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=processing.vocab_size + 8, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
        num_attention_heads=1, num_key_value_heads=1,
    ))
    args = trl.SFTConfig(output_dir=str(tmp_path / "trl"), assistant_only_loss=True, report_to=[], use_cpu=True,
                         bf16=False, max_length=None)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(rows),
                             processing_class=processing)
    return [trainer.data_collator([example]) for example in trainer.train_dataset]


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")  # TRL's own config
def test_ids_and_trained_tokens_equal_trls_sft_pipeline_with_assistant_only_loss(setup, tmp_path):
    root, ours, template, _ = setup
    source = root / "tokenizer"
    for rows in (CONVERSATIONS, PROMPT_COMPLETIONS):
        records = _records(tmp_path, rows)
        # TRL is given the conversations our reader made (a string prompt is one user message).
        trl_rows = [{"messages": list(r.messages)} if not r.prompt else
                    {"prompt": list(r.prompt), "completion": list(r.completion)} for r in records]
        batches = _trl_labels(trl_rows, source, template, tmp_path)
        assert len(batches) == len(records)
        for record, batch in zip(records, batches):
            encoded = encode_sft(record, template, ours)
            assert list(encoded.ids) == batch["input_ids"][0].tolist()
            # Both mark targets at their own position (HF models shift labels left by one), so the sets of
            # target positions compare directly. Position 0 is nobody's target: transformers' loss never reads
            # labels[0], and ours never marks it; TRL's is -100 here anyway, the template starting with
            # <|im_start|>.
            labels = batch["labels"][0].tolist()
            trl_targets = {i for i, label in enumerate(labels) if label != -100 and i > 0}
            our_targets = {i for i, trained in enumerate(encoded.trained) if trained}
            assert our_targets == trl_targets
            assistant_turns = sum(m["role"] == "assistant" for m in record.completion)
            im_end = ours.vocab["<|im_end|>"]
            assert sum(encoded.ids[i] == im_end for i in our_targets) == assistant_turns


def test_apply_chat_template_on_the_export_gives_our_ids_and_assistant_mask(setup, tmp_path):
    _, ours, template, export = setup
    hf = transformers.AutoTokenizer.from_pretrained(str(export))
    reloaded = ChatTemplate.load(str(export), ours)  # the template read back from tokenizer_config.json
    assert reloaded.text == template.text
    for record in _records(tmp_path, CONVERSATIONS + PROMPT_COMPLETIONS):
        encoded = encode_sft(record, template, ours)
        out = hf.apply_chat_template(list(record.messages), tokenize=True, return_dict=True,
                                     return_assistant_tokens_mask=True)
        assert out["input_ids"] == list(encoded.ids)
        assert encode_sft(record, reloaded, ours) == encoded
        if not record.prompt:
            assert [bool(m) for m in out["assistant_masks"]] == list(encoded.trained)
        else:
            prompt_ids = hf.apply_chat_template(list(record.prompt), tokenize=True, add_generation_prompt=True,
                                                return_dict=True)["input_ids"]
            assert encoded.trained.index(True) == len(prompt_ids)


def test_whole_sequence_and_preference_training_marks_every_token_after_the_prompt(setup, tmp_path):
    _, ours, template, _ = setup
    conversation, prompt_completion = _records(tmp_path, CONVERSATIONS[:1] + PROMPT_COMPLETIONS[:1])
    whole = encode_sft(conversation, template, ours, assistant_only=False)
    assert whole.trained == (False,) + (True,) * (len(whole.ids) - 1)
    completion = encode_sft(prompt_completion, template, ours, assistant_only=False)
    start = len(ours.tokenize(template.render(prompt_completion.prompt, add_generation_prompt=True)))
    assert completion.trained == (False,) * start + (True,) * (len(completion.ids) - start)
    path = tmp_path / "pref.jsonl"
    path.write_text(json.dumps({"prompt": "Name a colour of the sky.", "chosen": "Blue.", "rejected": "Red."}))
    chosen, rejected = encode_preference(read_preference_records([str(path)])[0], template, ours)
    assert (chosen.ids, chosen.trained) == (completion.ids, completion.trained)
    assert rejected.ids[:start] == chosen.ids[:start] and rejected.ids != chosen.ids
    assert rejected.trained == (False,) * start + (True,) * (len(rejected.ids) - start)


def test_a_prompt_whose_ids_are_not_a_prefix_of_prompt_and_completion_names_the_record(setup, tmp_path):
    root, ours, _, _ = setup
    (root / "space.jinja").write_text(SPACE_BEFORE_REPLY)
    template = ChatTemplate.load(str(root / "space.jinja"), ours)
    records = _records(tmp_path, [
        {"prompt": "What is one plus one?", "completion": "two."},
        {"messages": [{"role": "user", "content": "One plus one?"}, {"role": "assistant", "content": "two."}]},
    ])
    with pytest.raises(MegatronSotaError) as caught:
        encode_sft_records(records, template, ours)
    message = str(caught.value)
    assert "2 record(s) cannot be trained on" in message
    assert (f"{records[0].where}: expected the token ids of the prompt rendered with the generation prompt to be "
            f"a prefix of the whole conversation's ids") in message
    assert f"{records[1].where}: expected the token ids of the messages before message 1 to be a prefix" in message


def test_records_longer_than_the_context_and_templates_that_train_nothing_are_refused(setup, tmp_path):
    root, ours, template, _ = setup
    records = _records(tmp_path, CONVERSATIONS)
    longest = max(len(encode_sft(r, template, ours).ids) for r in records)
    assert len(encode_sft_records(records, template, ours, max_tokens=longest)) == 2
    with pytest.raises(MegatronSotaError) as caught:
        encode_sft_records(records, template, ours, max_tokens=longest - 1)
    assert f"{records[0].where}: expected at most {longest - 1} tokens (the sequence length), found {longest}" \
        in str(caught.value)
    cases = {
        "no_assistant.jinja": ("{% for m in messages %}{% if m.role != 'assistant' %}{{ m.content }}<|im_end|>"
                               "{% endif %}{% endfor %}", "followed by the assistant's content"),
        "no_end.jinja": ("{% for m in messages %}{{ m.content }}{% endfor %}", "expected an end-of-turn token"),
        "long_end.jinja": ("{% for m in messages %}{{ m.content }}END OF TURN{% endfor %}", "'END OF TURN'"),
        "syntax.jinja": ("{% for m in messages %}", "syntax error at line 1"),
    }
    for name, (text, reason) in cases.items():
        (root / name).write_text(text)
        with pytest.raises(MegatronSotaError, match=f"chat template {root / name}: .*{reason}"):
            ChatTemplate.load(str(root / name), ours)


def test_template_features_render_as_in_transformers_and_template_errors_name_the_record(setup, tmp_path):
    root, ours, _, export = setup
    text = (
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system turns') }}{% endif %}"
        "{{ '<|im_start|>' + m.role }} {% if m.role == 'tool' %}{% continue %}{% endif %}"
        "{{ m.content | tojson if m.role == 'user' else m.content }}"
        "{{ '<|im_end|>' }}\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
    )
    (root / "features.jinja").write_text(text)
    template = ChatTemplate.load(str(root / "features.jinja"), ours)
    hf = transformers.AutoTokenizer.from_pretrained(str(export))
    messages = [{"role": "user", "content": "<b>Tom & 'Jerry'</b> ünïcode"}, {"role": "assistant", "content": "ok"}]
    rendered = template.render(tuple(messages))
    assert '"<b>Tom & \'Jerry\'</b> ünïcode"' in rendered
    assert rendered == hf.apply_chat_template(messages, chat_template=text, tokenize=False)
    record = _records(tmp_path, [{"messages": [SYSTEM, *messages]}])[0]
    with pytest.raises(MegatronSotaError, match=f"{record.where}: expected chat template .* found an error: no system"):
        encode_sft(record, template, ours)
