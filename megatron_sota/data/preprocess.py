"""Tokenize a corpus into megatron-core indexed shards (<prefix>_<key>_document.bin/.idx).

Workers tokenize chunks in parallel; the writer adds them in input order, one partition at a
time, each finished partition kept so a re-run resumes. It must not train tokenizers.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import multiprocessing.pool
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy
from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

from megatron_sota.data.encode_worker import (
    EncodedChunk,
    EncodedKey,
    EncodeSettings,
    TokenizerSpec,
    encode_chunk,
)
from megatron_sota.data.merge import merge_datasets, publish, remove_pair
from megatron_sota.data.partitions import (
    WorkDir,
    piece_bytes,
    plan_partitions,
    settings_record,
)
from megatron_sota.data.preprocess_report import (
    EXAMPLES_KEPT,
    PreprocessStats,
    ProgressBar,
)
from megatron_sota.data.readers import (
    DEFAULT_CHUNK_BYTES,
    Piece,
    RawChunk,
    expand_inputs,
    read_chunks,
    record_location,
)
from megatron_sota.errors import MegatronSotaError

# Chunks in flight per worker. Results are written in order, so while the oldest chunk is
# still being tokenized the other workers run ahead only by this window: 2 let them starve
# behind one slow chunk (a multi-MB document); 8 keeps them busy for ~8 MB per worker.
CHUNKS_IN_FLIGHT_PER_WORKER = 8
log = logging.getLogger(__name__)

_In = TypeVar("_In")
_Out = TypeVar("_Out")


@dataclass(frozen=True)
class PreprocessOptions:
    inputs: tuple[str, ...]
    """Files, globs or directories (JSONL, .jsonl.gz, .jsonl.zst, parquet, text files)."""
    output_prefix: str
    tokenizer: TokenizerSpec
    json_keys: tuple[str, ...] = ("text",)
    append_eod: bool = False
    split_sentences: bool = False
    keep_newlines: bool = False
    workers: int = 1
    partitions: int = 1
    """Slices of the input finished (and kept across interruptions) one at a time."""
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    strict: bool = False
    """Stop at the first malformed record instead of skipping it."""
    log_interval: int = 1000
    """Documents between progress-bar refreshes."""
    progress: bool = True

    @property
    def level(self) -> str:
        return "sentence" if self.split_sentences else "document"


def output_prefix_for(output_prefix: str, key: str, level: str = "document") -> str:
    """Megatron-LM's naming: <output-prefix>_<key>_<document|sentence>."""
    return f"{output_prefix}_{key}_{level}"


def _ordered_map(
    pool: multiprocessing.pool.Pool, fn: Callable[[_In], _Out], items: Iterable[_In], in_flight: int
) -> Iterator[tuple[_In, _Out]]:
    """(item, fn(item)) in input order, at most `in_flight` items read ahead.

    Pool.imap would read the whole input into its task queue ahead of the workers.
    """
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append((item, pool.apply_async(fn, (item,))))
        if len(pending) >= in_flight:
            item, result = pending.popleft()
            yield item, result.get()
    while pending:
        item, result = pending.popleft()
        yield item, result.get()


def _encode_in_worker(chunk):  # type: ignore[no-untyped-def]
    return encode_chunk(_WORKER_SETTINGS[0], chunk)


# Set once per pool process by its initializer; pool tasks then carry only the chunk.
_WORKER_SETTINGS: list[EncodeSettings] = []


def _init_worker(settings: EncodeSettings) -> None:
    # One tokenizer thread per process: parallelism comes from the processes.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    os.environ["RAYON_NUM_THREADS"] = "1"
    _WORKER_SETTINGS[:] = [settings]


def _chunks_of(pieces: Sequence[Piece], options: PreprocessOptions) -> Iterator[RawChunk]:
    for piece in pieces:
        yield from read_chunks(piece, options.json_keys, options.chunk_bytes)


def _add_documents(builder: IndexedDatasetBuilder, part: EncodedKey) -> None:
    """A chunk's documents at once: what add_document per document would do, without its copies.

    Fills the builder's own fields (token bytes, sequence lengths, document boundaries) the way
    its add_document and add_index do, so finalize() writes the same .idx.
    """
    builder.data_file.write(memoryview(numpy.ascontiguousarray(part.tokens, dtype=builder.dtype)))
    first = len(builder.sequence_lengths)
    builder.sequence_lengths.extend(part.sequence_lengths.tolist())
    builder.document_indices.extend((first + numpy.cumsum(part.sequences_per_document)).tolist())


def _write_partition(
    index: int,
    pieces: Sequence[Piece],
    work: WorkDir,
    options: PreprocessOptions,
    settings: EncodeSettings,
    results: Callable[[Iterable[RawChunk]], Iterator[tuple[RawChunk, EncodedChunk]]],
    bar: ProgressBar,
) -> dict:
    """Tokenize one partition into its part files; returns the stats its marker records."""
    dtype = numpy.dtype(settings.dtype).type
    temps = {key: work.part_prefix(index, key, options.level) + ".tmp" for key in options.json_keys}
    builders = {key: IndexedDatasetBuilder(temps[key] + ".bin", dtype=dtype) for key in temps}
    stats = {"documents": 0, "tokens": 0, "text_bytes": 0, "skipped": Counter(), "examples": []}
    try:
        for chunk, encoded in results(_chunks_of(pieces, options)):
            for number, reason in encoded.skipped:
                where = record_location(chunk.piece, number)
                if options.strict:
                    raise MegatronSotaError(
                        f"{where}: {reason.replace('_', ' ')} (stopped by --strict; without it "
                        f"such records are counted and skipped)"
                    )
                stats["skipped"][reason] += 1
                if len(stats["examples"]) < EXAMPLES_KEPT:
                    stats["examples"].append(f"{where}: {reason}")
            tokens = 0
            for key, part in encoded.keys.items():
                _add_documents(builders[key], part)
                tokens += int(part.sequence_lengths.sum())
            stats["documents"] += encoded.documents
            stats["tokens"] += tokens
            stats["text_bytes"] += encoded.text_bytes
            bar.update(encoded.disk_bytes, encoded.documents, tokens)
        for key, builder in builders.items():
            builder.finalize(temps[key] + ".idx")
            publish(temps[key], work.part_prefix(index, key, options.level))
    finally:
        for key, builder in builders.items():
            builder.data_file.close()
            remove_pair(temps[key])
    stats["skipped"] = dict(stats["skipped"])
    work.mark_finished(index, stats)
    return stats


def _file_stamp(path: str | None) -> list | None:
    if not path or not os.path.exists(path):
        return None
    info = os.stat(path)
    return [os.path.abspath(path), info.st_size, info.st_mtime_ns]


def _check_options(options: PreprocessOptions) -> None:
    if options.workers < 1:
        raise MegatronSotaError(f"--workers: expected an integer >= 1, found {options.workers}")
    if options.partitions < 1:
        raise MegatronSotaError(
            f"--partitions: expected an integer >= 1, found {options.partitions}"
        )
    if not options.json_keys:
        raise MegatronSotaError("--json-keys: expected at least one key, found none")
    if options.chunk_bytes < 1:
        raise MegatronSotaError(f"chunk size: expected >= 1 byte, found {options.chunk_bytes}")


def _assemble(work: WorkDir, options: PreprocessOptions, finished: list[dict]) -> dict[str, str]:
    """Concatenate the partitions' part files into the final pair per key."""
    outputs = {}
    for key in options.json_keys:
        final = output_prefix_for(options.output_prefix, key, options.level)
        # An empty partition has no .bin bytes to map; it contributes nothing anyway.
        parts = [
            work.part_prefix(i, key, options.level)
            for i, done in enumerate(finished)
            if done["documents"] > 0
        ]
        if len(parts) == 1:
            publish(parts[0], final)
        else:
            merge_datasets(parts, final)
        outputs[key] = final
    return outputs


def preprocess(options: PreprocessOptions) -> PreprocessStats:
    """Tokenize every record of the inputs, in input order, into one indexed pair per json key."""
    _check_options(options)
    start = time.perf_counter()
    files = expand_inputs(options.inputs)
    tokenizer = options.tokenizer.build()  # a bad tokenizer fails before any output exists
    dtype = DType.optimal_dtype(tokenizer.vocab_size)
    settings = EncodeSettings(
        tokenizer=options.tokenizer,
        json_keys=tuple(options.json_keys),
        append_eod=options.append_eod,
        split_sentences=options.split_sentences,
        keep_newlines=options.keep_newlines,
        dtype=numpy.dtype(dtype).name,
    )
    partitions = plan_partitions(files, options.partitions)
    if len(partitions) < options.partitions:
        log.info(
            "note: %d partitions instead of %d: only plain .jsonl files can be cut, compressed/parquet/text "
            "files stay whole",
            len(partitions),
            options.partitions,
        )
    os.makedirs(os.path.dirname(os.path.abspath(options.output_prefix)), exist_ok=True)
    work = WorkDir(f"{options.output_prefix}_{options.level}.partitions")
    record = settings_record(
        encode=settings,
        tokenizer_files=[
            _file_stamp(options.tokenizer.model),
            _file_stamp(options.tokenizer.vocab_file),
            _file_stamp(options.tokenizer.merge_file),
        ],
    )
    reused, discarded = work.open(record, partitions)
    if discarded:
        log.warning(
            "%s held %d finished partitions of a run with other inputs or settings; they were discarded",
            work.path,
            discarded,
        )
    if reused:
        log.info("resuming: %d of %d partitions already finished in %s", reused, len(partitions), work.path)

    stats = PreprocessStats(input_bytes=sum(f.size for f in files))
    total_bytes = sum(piece_bytes(p) for pieces in partitions for p in pieces)
    bar = ProgressBar(total_bytes, options.progress, options.log_interval)
    pool = None
    if options.workers > 1:
        pool = multiprocessing.Pool(options.workers, initializer=_init_worker, initargs=(settings,))
        in_flight = options.workers * CHUNKS_IN_FLIGHT_PER_WORKER

        def results(chunks: Iterable[RawChunk]) -> Iterator[tuple[RawChunk, EncodedChunk]]:
            return _ordered_map(pool, _encode_in_worker, chunks, in_flight)
    else:

        def results(chunks: Iterable[RawChunk]) -> Iterator[tuple[RawChunk, EncodedChunk]]:
            return ((chunk, encode_chunk(settings, chunk)) for chunk in chunks)

    finished = []
    try:
        for index, pieces in enumerate(partitions):
            done = work.finished(index)
            if done is None:
                done = _write_partition(index, pieces, work, options, settings, results, bar)
            else:
                stats.partitions_reused += 1
                bar.update(sum(piece_bytes(p) for p in pieces), done["documents"], done["tokens"])
            stats.add(done)
            finished.append(done)
        if pool is not None:
            pool.close()
            pool.join()
            pool = None
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    if stats.documents == 0:
        work.remove()
        raise MegatronSotaError(
            f"--input {', '.join(options.inputs)}: expected at least one record with non-empty "
            f"text under {list(options.json_keys)}, found none "
            f"({sum(stats.skipped.values())} records skipped: {dict(stats.skipped)})"
        )
    stats.outputs = _assemble(work, options, finished)
    work.remove()
    stats.output_bytes = sum(
        os.path.getsize(prefix + ext) for prefix in stats.outputs.values() for ext in (".bin", ".idx")
    )
    stats.seconds = time.perf_counter() - start
    return stats
