"""Tokenizers megatron-core's GPT datasets accept: a SentencePiece model, or ids written as text.

Wraps existing models only; it must not train tokenizers (tokenizer_training.py does) or read data.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import sentencepiece
from megatron.core.datasets.megatron_tokenizer import MegatronLegacyTokenizer

from megatron_sota.errors import MegatronSotaError

TOKENIZER_TYPES = ("SentencePieceTokenizer", "NullTokenizer")


class SentencePieceTokenizer(MegatronLegacyTokenizer):
    """A SentencePiece model file exposed through megatron-core's tokenizer interface."""

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


class NullTokenizer(MegatronLegacyTokenizer):
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


def build_tokenizer(
    tokenizer_type: str, model_path: str | None = None, vocab_size: int | None = None
) -> SentencePieceTokenizer | NullTokenizer:
    """Build a tokenizer by Megatron-LM type name.

    SentencePieceTokenizer needs model_path; NullTokenizer needs vocab_size (eod = last id).
    """
    if tokenizer_type == "SentencePieceTokenizer":
        if not model_path:
            raise MegatronSotaError(
                "tokenizer model: expected a path to a SentencePiece .model file for "
                "SentencePieceTokenizer, found none"
            )
        return SentencePieceTokenizer(model_path)
    if tokenizer_type == "NullTokenizer":
        if vocab_size is None:
            raise MegatronSotaError(
                "tokenizer vocab_size: expected an integer for NullTokenizer, found none"
            )
        return NullTokenizer(vocab_size)
    raise MegatronSotaError(
        f"tokenizer type: expected one of {', '.join(TOKENIZER_TYPES)}, found {tokenizer_type!r}"
    )
