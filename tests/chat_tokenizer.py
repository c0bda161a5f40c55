"""A tiny byte-level BPE tokenizer with ChatML's special tokens, trained here in well under a second (no downloads).

For the post-training tests; it must not be used for anything but tests.
"""

from __future__ import annotations

import json
import pathlib

from megatron_sota.data.byte_level_bpe_training import train_byte_level_bpe

CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
_TEXT = (
    "You are a helpful assistant. What is two plus two? Two plus two is four.\n"
    "Name a colour of the sky. The sky is blue on a clear day, and grey when it rains.\n"
    "def add(a, b):\n    return a + b\n"
    "The user asks and the assistant answers, turn after turn, until the conversation ends.\n"
)


def train_chat_tokenizer(directory: pathlib.Path) -> pathlib.Path:
    """tokenizer.json (+ configs) in `directory`: <|endoftext|>=0 (eos), <|pad|>=1, <|im_start|>=2, <|im_end|>=3."""
    directory.mkdir(parents=True, exist_ok=True)
    corpus = directory / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": line}) + "\n" for line in _TEXT.splitlines() * 3))
    out = directory / "tokenizer"
    train_byte_level_bpe([str(corpus)], str(out), vocab_size=330, special_tokens=CHAT_TOKENS, quiet=True)
    return out
