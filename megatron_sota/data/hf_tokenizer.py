"""Byte-level BPE tokenizers run by HF `tokenizers`: a tokenizer.json, or GPT-2's vocab.json + merges.txt.

Loads existing files only (no hub downloads, no `transformers`); it must not train tokenizers or read data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from megatron_sota.data.tokenizer_interface import DatasetTokenizer
from megatron_sota.errors import MegatronSotaError

# Tried in order when no config file names the EOS token (GPT-2/NeoX, Llama/Mistral, Llama 3, Gemma).
EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eot_id|>")
_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")
GPT2_EOD = "<|endoftext|>"


def gpt2_byte_level(bpe: models.BPE) -> Tokenizer:
    """GPT-2's byte-level pipeline around `bpe`: OpenAI's split regex, each byte mapped to a printable
    character, no space added in front of the text, and the decoder that maps them back.

    The one definition shared by loading (GPT2BPETokenizer), training (byte_level_bpe_training.py) and
    export (conversion/tokenizer_export.py), so the three cannot drift apart.
    """
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


class _TokenizersLibraryTokenizer(DatasetTokenizer):
    """What both types share once a `tokenizers.Tokenizer` and its eod id exist."""

    _tokenizer: Tokenizer
    _eod: int
    _pad: int | None = None

    def tokenize(self, text: str) -> list[int]:
        # Document text only: Megatron appends eod itself, and BOS/EOS templates must not leak in.
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        # tokenizers runs batches on a process-wide Rayon pool sized to every core; preprocessing already
        # runs one worker process per core, so each process encodes on one thread unless the user chose:
        # TOKENIZERS_PARALLELISM (read by tokenizers at every batch call) defaults to "false" here, only in
        # a process that batch-encodes. `export TOKENIZERS_PARALLELISM=true RAYON_NUM_THREADS=n` gives
        # each process n threads (useful with a single worker).
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        encode = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        return [encoding.ids for encoding in encode(list(texts), add_special_tokens=False)]

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    @cached_property
    def _vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    @cached_property
    def _vocab_size(self) -> int:
        # A count, unless added tokens leave holes: the embedding must cover every id that can come out.
        return max(
            self._tokenizer.get_vocab_size(with_added_tokens=True), max(self._vocab.values()) + 1
        )

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def vocab(self) -> dict[str, int]:
        return self._vocab

    @cached_property
    def inv_vocab(self) -> dict[int, str]:
        return {i: token for token, i in self._vocab.items()}

    @property
    def eod(self) -> int:
        return self._eod

    @property
    def eos(self) -> int:
        return self._eod

    @property
    def pad(self) -> int:
        # Padded positions are masked out of the loss, so reusing eod is safe when no PAD exists.
        return self._eod if self._pad is None else self._pad


def _token_name(value: Any) -> str | None:
    # transformers writes special tokens as plain strings or as AddedToken dicts with "content".
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _read_json_object(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MegatronSotaError(
            f"tokenizer file {path!r}: expected a JSON object, found {err}"
        ) from err
    if not isinstance(data, dict):
        raise MegatronSotaError(
            f"tokenizer file {path!r}: expected a JSON object, found {type(data).__name__}"
        )
    return data


class HuggingFaceTokenizer(_TokenizersLibraryTokenizer):
    """A HF fast-tokenizer file (tokenizer.json, or a directory holding one and its config files)."""

    def __init__(self, model_path: str) -> None:
        json_path = _tokenizer_json_path(model_path)
        try:
            tokenizer = Tokenizer.from_file(json_path)
        except Exception as err:  # tokenizers raises plain Exception for every load failure
            raise MegatronSotaError(
                f"tokenizer model {json_path!r}: expected a HF tokenizers tokenizer.json, "
                f"found a file tokenizers cannot load ({err})"
            ) from err
        super().__init__(model_path)
        self._model_path = model_path
        self._tokenizer = tokenizer
        directory = os.path.dirname(json_path)
        eos_name, eos_source = _configured_token(directory, "eos_token")
        if eos_name is None:
            eos_name = next(
                (c for c in EOS_CANDIDATES if tokenizer.token_to_id(c) is not None), None
            )
            eos_source = json_path
        if eos_name is None:
            raise MegatronSotaError(
                f"tokenizer model {json_path!r}: expected an end-of-document token, found no eos_token "
                f"in {' or '.join(_CONFIG_FILES)} beside it and none of {', '.join(EOS_CANDIDATES)} "
                f"in the vocabulary"
            )
        eod = tokenizer.token_to_id(eos_name)
        if eod is None:
            raise MegatronSotaError(
                f"tokenizer file {eos_source!r}: expected eos_token {eos_name!r} to be in the "
                f"vocabulary of {json_path!r}, found no such token"
            )
        self._eod = eod
        pad_name, _ = _configured_token(directory, "pad_token")
        self._pad = tokenizer.token_to_id(pad_name) if pad_name else None

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # Rebuilt from the path in each worker process: loading tokenizer.json is fast and exact.
        return (type(self), (self._model_path,))

    @property
    def model_path(self) -> str:
        return self._model_path


def _tokenizer_json_path(model_path: str) -> str:
    if os.path.isfile(model_path):
        return model_path
    if os.path.isdir(model_path):
        json_path = os.path.join(model_path, "tokenizer.json")
        if os.path.isfile(json_path):
            return json_path
        found = ", ".join(sorted(os.listdir(model_path))[:10]) or "an empty directory"
        raise MegatronSotaError(
            f"tokenizer model {model_path!r}: expected a directory holding tokenizer.json (use "
            f"GPT2BPETokenizer for vocab.json + merges.txt, SentencePieceTokenizer for a .model file), "
            f"found {found}"
        )
    raise MegatronSotaError(
        f"tokenizer model {model_path!r}: expected a tokenizer.json file or a directory holding one "
        f"(hub names are not downloaded), found no such path"
    )


def _configured_token(directory: str, key: str) -> tuple[str | None, str | None]:
    """The token transformers would use for `key`, from the first config file beside tokenizer.json."""
    for name in _CONFIG_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            token = _token_name(_read_json_object(path).get(key))
            if token is not None:
                return token, path
    return None, None


class GPT2BPETokenizer(_TokenizersLibraryTokenizer):
    """GPT-2's byte-level BPE from vocab.json + merges.txt, as OpenAI's encoder and Megatron-LM run it."""

    def __init__(self, vocab_file: str, merge_file: str) -> None:
        for flag, path in (("vocab_file", vocab_file), ("merge_file", merge_file)):
            if not os.path.isfile(path):
                raise MegatronSotaError(
                    f"GPT2BPETokenizer {flag} {path!r}: expected an existing file, found no such file"
                )
        vocab = _read_json_object(vocab_file)
        if not all(isinstance(i, int) for i in vocab.values()):
            raise MegatronSotaError(
                f"GPT2BPETokenizer vocab_file {vocab_file!r}: expected GPT-2 vocab.json mapping tokens "
                f"to integer ids, found a JSON object with non-integer values (keys {sorted(vocab)[:5]})"
            )
        if GPT2_EOD not in vocab:
            raise MegatronSotaError(
                f"GPT2BPETokenizer vocab_file {vocab_file!r}: expected the end-of-document token "
                f"{GPT2_EOD!r} in the vocabulary, found {len(vocab)} tokens without it"
            )
        try:
            bpe = models.BPE.from_file(vocab_file, merge_file)
        except Exception as err:  # tokenizers raises plain Exception for every load failure
            raise MegatronSotaError(
                f"GPT2BPETokenizer merge_file {merge_file!r} with vocab_file {vocab_file!r}: expected "
                f"GPT-2 merges.txt lines 'left right' over tokens of the vocabulary, found ({err})"
            ) from err
        # <|endoftext|> is deliberately not an added token: in document text it is ordinary bytes,
        # exactly as in OpenAI's encoder and Megatron-LM's GPT2Tokenizer(special_tokens=[]).
        tokenizer = gpt2_byte_level(bpe)
        super().__init__(vocab_file, merge_file)
        self._vocab_file = vocab_file
        self._merge_file = merge_file
        self._tokenizer = tokenizer
        self._eod = vocab[GPT2_EOD]

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (type(self), (self._vocab_file, self._merge_file))
