"""Which chat template the server renders with: the run's post-training template (its end-of-turn token stops a
turn), else the shipped ChatML one, whose end of turn becomes a stop string for a tokenizer without that token."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from megatron_sota.data.tokenizer import build_tokenizer
from megatron_sota.serving.chat import served_template
from tests.chat_tokenizer import train_chat_tokenizer

OWN_TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)
MESSAGES = [{"role": "user", "content": "What is two plus two?"}]


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory):
    return build_tokenizer("HuggingFaceTokenizer", str(train_chat_tokenizer(tmp_path_factory.mktemp("chat_tok"))))


def test_the_runs_post_training_template_is_used_and_its_end_of_turn_is_a_token(chat_tokenizer):
    job = SimpleNamespace(posttrain=SimpleNamespace(chat_template_text=OWN_TEMPLATE))
    served = served_template(job, chat_tokenizer)
    assert served.prompt(MESSAGES) == "[user] What is two plus two?<|im_end|>\n[assistant] "
    assert served.stop == () and len(chat_tokenizer.tokenize(served.template.end_of_turn)) == 1


def test_without_one_the_shipped_chatml_template_is_used(chat_tokenizer, stdlib_shards):
    served = served_template(SimpleNamespace(posttrain=SimpleNamespace(chat_template_text=None)), chat_tokenizer)
    assert served.prompt(MESSAGES) == "<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n"
    assert served.stop == ()  # <|im_end|> is one token of this tokenizer
    plain = build_tokenizer("SentencePieceTokenizer", stdlib_shards.tokenizer_model)
    fallback = served_template(None, plain)  # a pretraining run: no posttrain group, no <|im_end|> token
    assert fallback.prompt(MESSAGES) == served.prompt(MESSAGES)
    assert fallback.stop == ("<|im_end|>",) and len(plain.tokenize("<|im_end|>")) > 1
