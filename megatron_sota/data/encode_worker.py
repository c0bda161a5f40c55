"""What a preprocessing worker does with one chunk: decode records, tokenize them in a batch.

Runs in pool processes (or inline with one worker); it must not write files or print.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

import numpy

from megatron_sota.data.readers import RawChunk, decode_record, iter_payloads, record_location
from megatron_sota.data.sentence_split import split_sentences
from megatron_sota.data.tokenizer import build_tokenizer
from megatron_sota.errors import MegatronSotaError


@dataclass(frozen=True)
class TokenizerSpec:
    """Enough to rebuild the same tokenizer in a worker process (hashable, picklable)."""

    tokenizer_type: str
    model: str | None = None
    vocab_file: str | None = None
    merge_file: str | None = None
    vocab_size: int | None = None

    def build(self):  # type: ignore[no-untyped-def]
        return _cached_tokenizer(self)


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(spec: TokenizerSpec):  # type: ignore[no-untyped-def]
    # Once per process: workers tokenize many chunks with the same model.
    return build_tokenizer(
        spec.tokenizer_type,
        spec.model,
        spec.vocab_size,
        vocab_file=spec.vocab_file,
        merge_file=spec.merge_file,
    )


@dataclass(frozen=True)
class EncodeSettings:
    tokenizer: TokenizerSpec
    json_keys: tuple[str, ...]
    append_eod: bool
    split_sentences: bool
    keep_newlines: bool
    dtype: str
    """numpy dtype name of the shard (uint16 for vocabularies below 65,500)."""


@dataclass
class EncodedKey:
    """One json key's documents of a chunk, concatenated, ready for IndexedDatasetBuilder."""

    tokens: numpy.ndarray
    sequence_lengths: numpy.ndarray
    sequences_per_document: numpy.ndarray


@dataclass
class EncodedChunk:
    keys: dict[str, EncodedKey]
    documents: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    """(record number within the chunk's piece, reason) of every record left out."""
    disk_bytes: int = 0
    text_bytes: int = 0


def _texts_of(record: dict, keys: tuple[str, ...]) -> tuple[list[list[str]] | None, str]:
    # Megatron-LM accepts a list of strings as pre-split sentences; keep that meaning.
    per_key = []
    for key in keys:
        if key not in record:
            return None, "missing_key"
        value = record[key]
        if isinstance(value, str):
            per_key.append([value])
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            per_key.append(value)
        else:
            return None, "not_a_string"
    return per_key, "ok"


def _raise_for_first_bad_record(tokenizer, documents, numbers, chunk: RawChunk) -> None:  # type: ignore[no-untyped-def]
    # The batch call cannot say which text failed; find it one record at a time.
    for doc, number in zip(documents, numbers):
        for text in (t for sentences in doc for t in sentences):
            try:
                tokenizer.tokenize(text)
            except MegatronSotaError as err:
                raise MegatronSotaError(f"{record_location(chunk.piece, number)}: {err}") from None


def encode_chunk(settings: EncodeSettings, chunk: RawChunk) -> EncodedChunk:
    """Tokenize every usable record of the chunk; all keys of a record are kept or dropped together."""
    keys = settings.json_keys
    result = EncodedChunk(keys={}, disk_bytes=chunk.disk_bytes)
    # Each document = per key, a list of sentences (one item unless split or pre-split).
    documents: list[list[list[str]]] = []
    numbers: list[int] = []
    for number, payload in iter_payloads(chunk):
        record, status = decode_record(chunk.kind, payload, keys)
        texts = None
        if record is not None:
            texts, status = _texts_of(record, keys)
        if texts is None:
            result.skipped.append((number, status))
            continue
        if settings.split_sentences:
            texts = [
                [s for text in sentences for s in split_sentences(text, settings.keep_newlines)]
                for sentences in texts
            ]
        documents.append(texts)
        numbers.append(number)
        result.text_bytes += sum(len(t) for sentences in texts for t in sentences)

    tokenizer = settings.tokenizer.build()
    flat = [text for doc in documents for sentences in doc for text in sentences]
    try:
        ids = tokenizer.tokenize_batch(flat)
    except MegatronSotaError:
        _raise_for_first_bad_record(tokenizer, documents, numbers, chunk)
        raise

    # Regroup: per key, per document, the non-empty sentences (Megatron-LM drops empty ones).
    grouped: dict[str, list[list[list[int]]]] = {key: [] for key in keys}
    position = 0
    kept_numbers = []
    for doc, number in zip(documents, numbers):
        doc_ids = []
        for sentences in doc:
            sequences = [ids[position + i] for i in range(len(sentences))]
            position += len(sentences)
            doc_ids.append([s for s in sequences if len(s) > 0])
        if any(not sequences for sequences in doc_ids):
            result.skipped.append((number, "empty"))
            continue
        for key, sequences in zip(keys, doc_ids):
            grouped[key].append(sequences)
        kept_numbers.append(number)
    result.documents = len(kept_numbers)
    result.skipped.sort()
    dtype = numpy.dtype(settings.dtype)
    eod = [tokenizer.eod] if settings.append_eod else None
    for key in keys:
        # The token lists in shard order, eod (when appended) as one more list closing each document's
        # last sequence: one pass of fromiter builds the array, no copy to insert eod afterwards.
        parts: list[list[int]] = []
        lengths_list: list[int] = []
        for doc in grouped[key]:
            parts += doc
            lengths_list += map(len, doc)
            if eod is not None:
                parts.append(eod)
                lengths_list[-1] += 1
        lengths = numpy.array(lengths_list, dtype=numpy.int64)
        tokens = numpy.fromiter(itertools.chain.from_iterable(parts), dtype=dtype, count=int(lengths.sum()))
        per_document = numpy.fromiter((len(doc) for doc in grouped[key]), dtype=numpy.int64)
        result.keys[key] = EncodedKey(tokens, lengths, per_document)
    return result
