"""Train a SentencePiece BPE or unigram model with settings that round-trip source code exactly.

Writes <prefix>.model/.vocab only; it must not tokenize datasets or write training shards.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence

import sentencepiece

from megatron_sota.data.tokenizer_corpus import (
    TrainedTokenizer,
    TrainingLines,
    check_special_tokens,
    check_vocab_size,
)
from megatron_sota.errors import MegatronSotaError

MODEL_TYPES = ("bpe", "unigram")
# Fixed special ids: the trainer and data pipeline rely on eos=2 being end-of-document.
UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3
_META_PIECES = ("<unk>", "<s>", "</s>", "<pad>")
_BYTE_PIECES = tuple(f"<0x{b:02X}>" for b in range(256))

# SentencePiece's own wording (0.2.x) for the two ways a vocabulary size can fit the corpus badly.
_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_LOW = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def train_sentencepiece(
    inputs: Sequence[str],
    model_prefix: str,
    vocab_size: int = 8000,
    json_key: str = "text",
    model_type: str = "bpe",
    character_coverage: float = 1.0,
    max_sentence_length: int = 4192,
    input_sentence_size: int = 200_000,
    num_threads: int | None = None,
    seed: int = 1234,
    quiet: bool = False,
    special_tokens: Sequence[str] = (),
    verbose: bool = False,
) -> TrainedTokenizer:
    """Train <model_prefix>.model/.vocab; ids: unk=0, bos=1, eos=2, pad=3, then special_tokens,
    then 256 byte-fallback pieces, then learned pieces.

    `inputs` are files, globs or directories in any format readers.py reads; each line of text is
    one sentence. `input_sentence_size` lines are sampled with `seed` (0 = every line). `quiet`
    hides the progress bar; `verbose` shows SentencePiece's own trainer log (hundreds of lines on
    stderr), which is otherwise limited to its warnings.
    """
    if model_type not in MODEL_TYPES:
        raise MegatronSotaError(
            f"--model-type: expected one of {', '.join(MODEL_TYPES)} for sentencepiece, "
            f"found {model_type!r}"
        )
    specials = check_special_tokens(special_tokens, _META_PIECES + _BYTE_PIECES)
    reserved = len(_META_PIECES) + len(_BYTE_PIECES) + len(specials)
    check_vocab_size(
        vocab_size,
        reserved,
        "sentencepiece",
        f"{len(_META_PIECES)} special ids + {len(_BYTE_PIECES)} byte-fallback pieces + "
        f"{len(specials)} --special-tokens",
    )
    start = time.perf_counter()
    # SentencePiece treats each item as one sentence and drops items over max_sentence_length
    # bytes, so whole files would be discarded; lines are the natural unit for code. Its own
    # shuffled sampling ignores set_random_generator_seed (0.2.x), so the same corpus gave
    # different models; sampling here with a seed makes training reproducible.
    lines = TrainingLines(
        inputs,
        json_key,
        sample_size=input_sentence_size,
        seed=seed,
        keep_line_breaks=False,
        max_bytes=max_sentence_length,
        progress=not quiet,
    )
    os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
    try:
        sentencepiece.SentencePieceTrainer.Train(
            sentence_iterator=iter(lines),
            model_prefix=model_prefix,
            vocab_size=vocab_size,
            model_type=model_type,
            user_defined_symbols=specials,
            character_coverage=character_coverage,
            max_sentence_length=max_sentence_length,
            input_sentence_size=0,  # already sampled above: use every sentence given
            shuffle_input_sentence=False,
            byte_fallback=True,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            pad_id=PAD_ID,
            # Code needs exact whitespace: no NFKC, no collapsing of indentation, no dummy
            # leading space, and runs of spaces may become single pieces.
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            num_threads=num_threads or os.cpu_count() or 1,
            minloglevel=0 if verbose else 1,  # SentencePiece's levels: 0 info, 1 warning
        )
    except RuntimeError as err:
        if lines.error is not None:
            raise lines.error from None
        if lines.counts.lines_seen == 0:
            raise lines.no_text_error() from err
        raise _explain(err, vocab_size, model_type, character_coverage, reserved, lines) from err
    counts = lines.finish()
    return TrainedTokenizer(
        library="sentencepiece",
        model_path=f"{model_prefix}.model",
        files=(f"{model_prefix}.model", f"{model_prefix}.vocab"),
        vocab_size=vocab_size,
        preprocess_flags=(
            (
                "--tokenizer-type",
                "SentencePieceTokenizer",
                "--tokenizer-model",
                f"{model_prefix}.model",
            ),
        ),
        corpus=counts,
        seconds=time.perf_counter() - start,
    )


def _explain(
    err: RuntimeError,
    vocab_size: int,
    model_type: str,
    character_coverage: float,
    reserved: int,
    lines: TrainingLines,
) -> MegatronSotaError:
    too_high = _TOO_HIGH.search(str(err))
    if too_high:
        limit = int(too_high.group(2))
        more = (
            f" (--input-sentence-size 0 uses all {lines.counts.lines_seen} lines)"
            if lines.sample_size and lines.counts.lines_seen > lines.sample_size
            else ""
        )
        return MegatronSotaError(
            f"--vocab-size {vocab_size}: expected a corpus with enough distinct pieces for "
            f"SentencePiece {model_type}, found at most {limit} in {lines.describe()}; "
            f"use --vocab-size <= {limit}, or train on more text{more}"
        )
    too_low = _TOO_LOW.search(str(err))
    if too_low:
        needed = int(too_low.group(2))
        return MegatronSotaError(
            f"--vocab-size {vocab_size}: expected at least {needed} for {lines.describe()} "
            f"({reserved} reserved pieces + {needed - reserved} characters needed for "
            f"--character-coverage {character_coverage}), found {vocab_size}"
        )
    return MegatronSotaError(
        f"SentencePiece {model_type} training on {lines.describe()} (--json-key "
        f"{lines.json_key!r}, --vocab-size {vocab_size}) failed: {err}"
    )
