"""Train a SentencePiece BPE model from JSONL documents, with settings that round-trip source code.

Produces <prefix>.model/.vocab only; it must not tokenize datasets or write training shards.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import time
from dataclasses import dataclass
from typing import IO, Iterator, Sequence

import sentencepiece

from megatron_sota.errors import MegatronSotaError

# Fixed special ids: the trainer and data pipeline rely on eos=2 being end-of-document.
UNK_ID, BOS_ID, EOS_ID, PAD_ID = 0, 1, 2, 3


@dataclass(frozen=True)
class TrainedTokenizer:
    """Where the trained model went and what it was trained on."""

    model_path: str
    vocab_path: str
    vocab_size: int
    documents: int
    sentences_seen: int
    sentences_fed: int
    sentences_too_long: int
    seconds: float


@dataclass
class _FeedCounts:
    documents: int = 0
    sentences: int = 0
    too_long: int = 0


def open_jsonl(path: str) -> IO[bytes]:
    """Open a .jsonl or .jsonl.gz file for binary line iteration."""
    if not os.path.isfile(path):
        raise MegatronSotaError(f"input file {path!r}: expected an existing JSONL file, found none")
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def iter_documents(paths: Sequence[str], json_key: str) -> Iterator[str]:
    """Text of every well-formed line; malformed lines are skipped (preprocess_data counts them)."""
    for path in paths:
        with open_jsonl(path) as f:
            for raw in f:
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                text = record.get(json_key) if isinstance(record, dict) else None
                if isinstance(text, str) and text.strip():
                    yield text


def _iter_sentences(
    paths: Sequence[str], json_key: str, max_sentence_length: int, counts: _FeedCounts
) -> Iterator[str]:
    # SentencePiece treats each item as one sentence and drops items over max_sentence_length
    # bytes, so whole files would be discarded; lines are the natural unit for code.
    for text in iter_documents(paths, json_key):
        counts.documents += 1
        for line in text.splitlines():
            if not line.strip():
                continue
            if len(line.encode("utf-8")) > max_sentence_length:
                counts.too_long += 1
                continue
            counts.sentences += 1
            yield line


def _reservoir_sample(items: Iterator[str], size: int, seed: int) -> list[str]:
    """Uniform sample of `size` items in one pass (Algorithm R), reproducible for a given seed."""
    rng = random.Random(seed)
    sample: list[str] = []
    for seen, item in enumerate(items):
        if seen < size:
            sample.append(item)
        else:
            slot = rng.randrange(seen + 1)
            if slot < size:
                sample[slot] = item
    return sample


def _no_text_error(inputs: Sequence[str], json_key: str) -> MegatronSotaError:
    return MegatronSotaError(
        f"tokenizer training inputs {', '.join(inputs)}: expected lines with non-empty "
        f"{json_key!r} strings, found none"
    )


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
) -> TrainedTokenizer:
    """Train <model_prefix>.model/.vocab; ids: unk=0, bos=1, eos=2, pad=3, with byte fallback."""
    if not inputs:
        raise MegatronSotaError(
            "tokenizer training inputs: expected at least one JSONL file, found none"
        )
    for path in inputs:
        open_jsonl(path).close()  # fail before the trainer starts, with a message naming the file
    parent = os.path.dirname(os.path.abspath(model_prefix))
    os.makedirs(parent, exist_ok=True)

    counts = _FeedCounts()
    start = time.perf_counter()
    sentences: Iterator[str] | list[str] = _iter_sentences(
        inputs, json_key, max_sentence_length, counts
    )
    if input_sentence_size > 0:
        # SentencePiece's own shuffled sampling ignores set_random_generator_seed (0.2.x), so
        # the same corpus gave different models; sampling here makes training reproducible.
        sentences = _reservoir_sample(sentences, input_sentence_size, seed)
    try:
        sentencepiece.SentencePieceTrainer.Train(
            sentence_iterator=iter(sentences),
            model_prefix=model_prefix,
            vocab_size=vocab_size,
            model_type=model_type,
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
            minloglevel=2 if quiet else 0,
        )
    except RuntimeError as err:
        if counts.sentences == 0:
            raise _no_text_error(inputs, json_key) from err
        raise MegatronSotaError(
            f"tokenizer training on {', '.join(inputs)} (key {json_key!r}, "
            f"vocab_size {vocab_size}) failed: {err}"
        ) from err
    seconds = time.perf_counter() - start
    if counts.sentences == 0:
        raise _no_text_error(inputs, json_key)
    return TrainedTokenizer(
        model_path=f"{model_prefix}.model",
        vocab_path=f"{model_prefix}.vocab",
        vocab_size=vocab_size,
        documents=counts.documents,
        sentences_seen=counts.sentences,
        sentences_fed=min(counts.sentences, input_sentence_size or counts.sentences),
        sentences_too_long=counts.too_long,
        seconds=seconds,
    )
