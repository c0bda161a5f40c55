"""Train a tokenizer by library name: SentencePiece (BPE or unigram) or Hugging Face byte-level BPE.

Chooses and checks options only; the trainers are sentencepiece_training.py and
byte_level_bpe_training.py, and it must not tokenize datasets or write shards.
"""

from __future__ import annotations

from collections.abc import Sequence

from megatron_sota.data.sentencepiece_training import (
    BOS_ID,
    EOS_ID,
    MODEL_TYPES,
    PAD_ID,
    UNK_ID,
    train_sentencepiece,
)
from megatron_sota.data.tokenizer_corpus import MAX_VOCAB_SIZE, TrainedTokenizer
from megatron_sota.errors import MegatronSotaError

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "LIBRARIES",
    "MAX_VOCAB_SIZE",
    "MODEL_TYPES",
    "PAD_ID",
    "UNK_ID",
    "TrainedTokenizer",
    "train_sentencepiece",
    "train_tokenizer",
]

LIBRARIES = ("sentencepiece", "huggingface")


def train_tokenizer(
    library: str,
    inputs: Sequence[str],
    output: str,
    vocab_size: int,
    *,
    json_key: str = "text",
    model_type: str | None = None,
    special_tokens: Sequence[str] = (),
    input_sentence_size: int = 200_000,
    seed: int = 1234,
    quiet: bool = False,
    verbose: bool = False,
    character_coverage: float | None = None,
    max_sentence_length: int | None = None,
    num_threads: int | None = None,
    model_max_length: int | None = None,
) -> TrainedTokenizer:
    """Train with `library`; `output` is a file prefix (sentencepiece) or a directory (huggingface).

    Options left None take the library's default; one given to the library that has no use for
    it is an error rather than silently ignored. `quiet` hides progress bars; `verbose` shows the
    SentencePiece trainer's own log (the Hugging Face trainer has none beyond its progress bar).
    """
    sentencepiece_only = {
        "character_coverage": character_coverage,
        "max_sentence_length": max_sentence_length,
        "num_threads": num_threads,
    }
    given = {name: value for name, value in sentencepiece_only.items() if value is not None}
    if library == "sentencepiece":
        if model_max_length is not None:
            raise MegatronSotaError(
                "--model-max-length: applies to --library huggingface only, found it set for "
                "sentencepiece"
            )
        return train_sentencepiece(
            inputs,
            output,
            vocab_size=vocab_size,
            json_key=json_key,
            model_type=model_type or "bpe",
            special_tokens=special_tokens,
            input_sentence_size=input_sentence_size,
            seed=seed,
            quiet=quiet,
            verbose=verbose,
            **given,  # type: ignore[arg-type]
        )
    if library == "huggingface":
        if model_type not in (None, "bpe"):
            raise MegatronSotaError(
                f"--model-type: expected bpe (or nothing) for --library huggingface, which trains "
                f"byte-level BPE only, found {model_type!r}"
            )
        if given:
            flag = "--" + next(iter(given)).replace("_", "-")
            raise MegatronSotaError(
                f"{flag}: applies to --library sentencepiece only, found it set for huggingface"
            )
        # Imported here so SentencePiece training works without `tokenizers` installed.
        from megatron_sota.data.byte_level_bpe_training import (
            NO_MAX_LENGTH,
            train_byte_level_bpe,
        )

        return train_byte_level_bpe(
            inputs,
            output,
            vocab_size=vocab_size,
            json_key=json_key,
            special_tokens=special_tokens,
            input_sentence_size=input_sentence_size,
            seed=seed,
            model_max_length=NO_MAX_LENGTH if model_max_length is None else model_max_length,
            quiet=quiet,
        )
    raise MegatronSotaError(
        f"--library: expected one of {', '.join(LIBRARIES)}, found {library!r}"
    )
