"""Tokenizers megatron-core's GPT datasets accept, built by Megatron-LM --tokenizer-type name.

Wraps existing models only (BPE in hf_tokenizer.py, tiktoken_tokenizer.py); it must not train or read data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import sentencepiece

from megatron_sota.data.hf_tokenizer import GPT2BPETokenizer, HuggingFaceTokenizer
from megatron_sota.data.tiktoken_tokenizer import (
    DEFAULT_NUM_SPECIAL_TOKENS,
    TikTokenizer,
)
from megatron_sota.data.tokenizer_interface import DatasetTokenizer
from megatron_sota.errors import MegatronSotaError

TOKENIZER_TYPES = (
    "SentencePieceTokenizer",
    "GPTSentencePieceTokenizer",
    "HuggingFaceTokenizer",
    "GPT2BPETokenizer",
    "TikTokenizer",
    "NullTokenizer",
)


class SentencePieceTokenizer(DatasetTokenizer):
    """A SentencePiece model file exposed through the interface megatron-core's datasets read."""

    def __init__(self, model_path: str) -> None:
        if not os.path.isfile(model_path):
            raise MegatronSotaError(
                f"tokenizer model file {model_path!r}: expected an existing SentencePiece "
                f".model file, found no such file"
            )
        processor = sentencepiece.SentencePieceProcessor()
        try:
            processor.Load(model_path)
        except (OSError, RuntimeError) as err:
            raise MegatronSotaError(
                f"tokenizer model file {model_path!r}: expected a SentencePiece model, "
                f"found a file sentencepiece cannot load ({err})"
            ) from err
        if processor.eos_id() < 0:
            # GPT datasets separate documents with eod; a model without EOS cannot provide it.
            raise MegatronSotaError(
                f"tokenizer model file {model_path!r}: expected a model with an EOS piece "
                f"(used as end-of-document), found eos_id = -1"
            )
        super().__init__(model_path)
        self._model_path = model_path
        self._processor = processor
        self._inv_vocab = {i: processor.IdToPiece(i) for i in range(processor.GetPieceSize())}
        self._vocab = {piece: i for i, piece in self._inv_vocab.items()}

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # The C++ processor is not reliably picklable; reloading from the path is cheap and exact.
        return (type(self), (self._model_path,))

    @property
    def model_path(self) -> str:
        return self._model_path

    def tokenize(self, text: str) -> list[int]:
        return self._processor.EncodeAsIds(text)

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        # sentencepiece batches on all cores by default; one thread per worker process avoids
        # oversubscription when preprocessing runs a process per core.
        return self._processor.Encode(list(texts), out_type=int, num_threads=1)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._processor.DecodeIds([int(i) for i in ids])

    @property
    def vocab_size(self) -> int:
        return self._processor.GetPieceSize()

    @property
    def vocab(self) -> dict[str, int]:
        return self._vocab

    @property
    def inv_vocab(self) -> dict[int, str]:
        return self._inv_vocab

    @property
    def eod(self) -> int:
        return self._processor.eos_id()

    @property
    def eos(self) -> int:
        return self._processor.eos_id()

    @property
    def bos(self) -> int:
        bos_id = self._processor.bos_id()
        if bos_id < 0:
            raise MegatronSotaError(
                f"tokenizer model file {self._model_path!r}: expected a BOS piece, "
                f"found bos_id = -1"
            )
        return bos_id

    @property
    def pad(self) -> int:
        # Padded positions are masked out of the loss, so reusing EOS is safe when no PAD exists.
        pad_id = self._processor.pad_id()
        return pad_id if pad_id >= 0 else self.eod


class NullTokenizer(DatasetTokenizer):
    """Text that already holds whitespace-separated token ids; the last id is end-of-document."""

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < 2:
            raise MegatronSotaError(
                f"NullTokenizer vocab_size: expected an integer >= 2 (ids plus eod), "
                f"found {vocab_size}"
            )
        super().__init__(vocab_size=vocab_size)
        self._vocab_size = vocab_size

    def tokenize(self, text: str) -> list[int]:
        ids = []
        for word in text.split():
            try:
                token = int(word)
            except ValueError:
                raise MegatronSotaError(
                    f"NullTokenizer input: expected whitespace-separated integer ids, "
                    f"found {word!r}"
                ) from None
            if not 0 <= token < self._vocab_size:
                raise MegatronSotaError(
                    f"NullTokenizer input: expected ids in [0, {self._vocab_size}), found {token}"
                )
            ids.append(token)
        return ids

    def tokenize_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.tokenize(text) for text in texts]

    def detokenize(self, ids: Sequence[int]) -> str:
        return " ".join(str(int(i)) for i in ids)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def vocab(self) -> dict[str, int]:
        # Built on demand: a null vocabulary is just the ids spelled as text.
        return {str(i): i for i in range(self._vocab_size)}

    @property
    def inv_vocab(self) -> dict[int, str]:
        return {i: str(i) for i in range(self._vocab_size)}

    @property
    def eod(self) -> int:
        return self._vocab_size - 1

    @property
    def eos(self) -> int:
        return self.eod

    @property
    def pad(self) -> int:
        return self.eod


Tokenizer = (
    SentencePieceTokenizer | HuggingFaceTokenizer | GPT2BPETokenizer | TikTokenizer | NullTokenizer
)


def build_tokenizer(
    tokenizer_type: str,
    model_path: str | None = None,
    vocab_size: int | None = None,
    *,
    vocab_file: str | None = None,
    merge_file: str | None = None,
    tiktoken_pattern: str = "v2",
    tiktoken_num_special_tokens: int = DEFAULT_NUM_SPECIAL_TOKENS,
) -> Tokenizer:
    """Build a tokenizer by Megatron-LM --tokenizer-type name.

    model_path is --tokenizer-model (a SentencePiece .model, a tokenizer.json or its directory, a
    tiktoken .json); vocab_file and merge_file are GPT2BPETokenizer's --vocab-file/--merge-file;
    vocab_size is NullTokenizer's (eod = last id) and TikTokenizer's (default 131072), ignored otherwise.
    """
    if tokenizer_type not in TOKENIZER_TYPES:
        raise MegatronSotaError(
            f"tokenizer type: expected one of {', '.join(TOKENIZER_TYPES)}, found {tokenizer_type!r}"
        )
    if tokenizer_type == "NullTokenizer":
        if vocab_size is None:
            raise MegatronSotaError(
                "tokenizer vocab_size: expected an integer for NullTokenizer, found none"
            )
        return NullTokenizer(vocab_size)
    if tokenizer_type == "GPT2BPETokenizer":
        missing = [
            flag
            for flag, value in (("vocab_file", vocab_file), ("merge_file", merge_file))
            if not value
        ]
        if missing:
            raise MegatronSotaError(
                f"tokenizer {' and '.join(missing)}: expected GPT-2 vocab.json and merges.txt paths "
                f"for GPT2BPETokenizer (tokenizer.model is not used), found none"
            )
        return GPT2BPETokenizer(vocab_file, merge_file)
    if not model_path:
        raise MegatronSotaError(
            f"tokenizer model: expected a path to {_MODEL_FILE_KIND[tokenizer_type]} for "
            f"{tokenizer_type}, found none"
        )
    if tokenizer_type == "HuggingFaceTokenizer":
        return HuggingFaceTokenizer(model_path)
    if tokenizer_type == "TikTokenizer":
        return TikTokenizer(model_path, tiktoken_pattern, tiktoken_num_special_tokens, vocab_size)
    # GPTSentencePieceTokenizer is the same model used the same way (plain pieces, eod = EOS).
    return SentencePieceTokenizer(model_path)


_MODEL_FILE_KIND = {
    "SentencePieceTokenizer": "a SentencePiece .model file",
    "GPTSentencePieceTokenizer": "a SentencePiece .model file",
    "HuggingFaceTokenizer": "a tokenizer.json file or its directory",
    "TikTokenizer": "a tiktoken .json vocabulary",
}


def build_configured_tokenizer(tok, preset_vocab_size: int) -> Tokenizer:
    """The tokenizer a run's `tokenizer` group (a TokenizerConfig) describes; a NullTokenizer when it names none."""
    if tok.type is None:
        return build_tokenizer("NullTokenizer", vocab_size=preset_vocab_size)
    # The preset's vocab_size stands in for NullTokenizer's only: TikTokenizer would cut its vocabulary.
    vocab_size = tok.vocab_size or (preset_vocab_size if tok.type == "NullTokenizer" else None)
    return build_tokenizer(tok.type, tok.model, vocab_size, vocab_file=tok.vocab_file, merge_file=tok.merge_file)
