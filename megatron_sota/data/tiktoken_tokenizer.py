"""TikTokenizer: megatron-core's tiktoken vocabulary loader behind the interface our other tokenizers have.

Composes megatron.core's TikTokenTokenizer (vocabulary format, special-token layout, eod); it must not
reimplement that format or train vocabularies.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from megatron_sota.data.tokenizer_interface import DatasetTokenizer
from megatron_sota.errors import MegatronSotaError

# Megatron-LM's defaults: --vocab-size falls back to 2**17, --tiktoken-num-special-tokens is 1000.
DEFAULT_VOCAB_SIZE = 2**17
DEFAULT_NUM_SPECIAL_TOKENS = 1000
PATTERNS = ("v1", "v2")
VOCAB_FORMAT = (
    "a JSON list of {rank, token_bytes (base64), token_str} with rank = position and the first 256 "
    "entries the single bytes 0..255"
)


class TikTokenizer(DatasetTokenizer):
    """A tiktoken BPE vocabulary; ids 0..num_special_tokens-1 are specials, eod is `</s>` (id 2)."""

    def __init__(
        self,
        model_path: str,
        pattern: str = "v2",
        num_special_tokens: int = DEFAULT_NUM_SPECIAL_TOKENS,
        vocab_size: int | None = None,
    ) -> None:
        # Imported here: `import megatron.core` costs seconds (torch and the whole package), which every process
        # importing the tokenizers (curation workers, preprocessing) would pay for the TikToken type alone.
        from megatron.core.tokenizers.text.libraries.tiktoken_tokenizer import SPECIAL_TOKENS, TikTokenTokenizer

        vocab_size = DEFAULT_VOCAB_SIZE if vocab_size is None else int(vocab_size)
        entries = _count_vocab_entries(model_path)
        if pattern not in PATTERNS:
            raise MegatronSotaError(
                f"TikTokenizer pattern: expected one of {', '.join(PATTERNS)}, found {pattern!r}"
            )
        if not len(SPECIAL_TOKENS) <= num_special_tokens < vocab_size:
            raise MegatronSotaError(
                f"TikTokenizer num_special_tokens: expected {len(SPECIAL_TOKENS)} <= "
                f"num_special_tokens < vocab_size ({vocab_size}), found {num_special_tokens}"
            )
        if vocab_size > num_special_tokens + entries:
            # A smaller vocab_size keeps the first ranks only (Megatron-LM's meaning); a larger one
            # would leave ids without tokens.
            raise MegatronSotaError(
                f"TikTokenizer vocab_size for {model_path!r}: expected at most "
                f"{num_special_tokens + entries} (num_special_tokens {num_special_tokens} + {entries} "
                f"entries in the file), found {vocab_size}; set tokenizer.vocab_size"
            )
        try:
            library = TikTokenTokenizer(
                model_path,
                special_tokens=None,
                num_special_tokens=num_special_tokens,
                pattern=pattern,
                vocab_size=vocab_size,
            )
        except (AssertionError, ValueError, KeyError, TypeError, binascii.Error) as err:
            raise MegatronSotaError(
                f"TikTokenizer model {model_path!r}: expected {VOCAB_FORMAT}, found "
                f"{_first_bad_entry(model_path) or err!r}"
            ) from err
        super().__init__(
            model_path,
            pattern=pattern,
            num_special_tokens=num_special_tokens,
            vocab_size=vocab_size,
        )
        self._args = (model_path, pattern, num_special_tokens, vocab_size)
        self._library = library
        self._encoding = library.tokenizer

    def __reduce__(self) -> tuple[Any, tuple[str, str, int, int]]:
        # The tiktoken Encoding is rebuilt from the file in each worker process.
        return (type(self), self._args)

    @property
    def model_path(self) -> str:
        return self._args[0]

    def tokenize(self, text: str) -> list[int]:
        # Ordinary text: a literal "</s>" in a document is bytes, not eod (as Megatron-LM's TikTokenizer).
        return self._encoding.encode_ordinary(text)

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        # tiktoken batches on a thread pool (8 threads by default); one per process, as preprocessing
        # already runs one worker process per core.
        return self._encoding.encode_ordinary_batch(list(texts), num_threads=1)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._encoding.decode([int(i) for i in ids])

    @property
    def vocab_size(self) -> int:
        return self._library.vocab_size

    @cached_property
    def vocab(self) -> dict[bytes | str, int]:
        """Ordinary tokens as bytes, special tokens as str (as Megatron-LM's TikTokenizer)."""
        vocab: dict[bytes | str, int] = dict(self._library.token2id)
        vocab.update({token: i for i, token in enumerate(self._library.special_tokens)})
        return vocab

    @cached_property
    def inv_vocab(self) -> dict[int, bytes | str]:
        return {i: token for token, i in self.vocab.items()}

    @property
    def eod(self) -> int:
        return self._library.eod

    @property
    def eos(self) -> int:
        return self._library.eos_id

    @property
    def bos(self) -> int:
        return self._library.bos_id

    @property
    def pad(self) -> int:
        return self._library.pad_id


def _count_vocab_entries(model_path: str) -> int:
    if not os.path.isfile(model_path):
        raise MegatronSotaError(
            f"TikTokenizer model {model_path!r}: expected an existing .json vocabulary file, "
            f"found no such file"
        )
    if not model_path.endswith(".json"):
        # megatron-core asserts on the suffix; say so before it does.
        raise MegatronSotaError(
            f"TikTokenizer model {model_path!r}: expected a .json vocabulary file ({VOCAB_FORMAT}), "
            f"found another suffix"
        )
    try:
        with open(model_path, encoding="utf-8") as f:
            vocab = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MegatronSotaError(
            f"TikTokenizer model {model_path!r}: expected {VOCAB_FORMAT}, found unreadable JSON ({err})"
        ) from err
    if not isinstance(vocab, list):
        raise MegatronSotaError(
            f"TikTokenizer model {model_path!r}: expected {VOCAB_FORMAT}, found a JSON "
            f"{type(vocab).__name__}"
        )
    return len(vocab)


def _first_bad_entry(model_path: str) -> str | None:
    # Only on the error path: megatron-core's checks are bare asserts, so find the entry to name.
    with open(model_path, encoding="utf-8") as f:
        vocab = json.load(f)
    seen: set[bytes] = set()
    for i, entry in enumerate(vocab):
        if not isinstance(entry, dict) or set(entry) != {"rank", "token_bytes", "token_str"}:
            return f"entry {i} = {str(entry)[:80]}"
        if entry["rank"] != i:
            return f"entry {i} with rank {entry['rank']!r}"
        try:
            token = base64.b64decode(entry["token_bytes"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            return f"entry {i} with token_bytes {str(entry['token_bytes'])[:40]!r} (not base64)"
        if i < 256 and token != bytes([i]):
            return f"entry {i} with bytes {token!r} (expected {bytes([i])!r})"
        if token in seen:
            return f"entry {i} repeating the bytes {token!r} of an earlier entry"
        seen.add(token)
    return None
