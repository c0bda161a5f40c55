"""Tokenize a JSONL corpus into megatron-core indexed shards (<prefix>_<key>_document.bin/.idx).

Writes complete shards or nothing (temp names, renamed at the end); it must not train tokenizers.
"""

from __future__ import annotations

import functools
import itertools
import json
import multiprocessing
import multiprocessing.pool
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy
from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder
from tqdm import tqdm

from megatron_sota.data.tokenizer import NullTokenizer, SentencePieceTokenizer, build_tokenizer
from megatron_sota.data.tokenizer_training import open_jsonl
from megatron_sota.errors import MegatronSotaError

SKIP_REASONS = ("malformed_json", "not_utf8", "missing_key", "not_a_string", "empty")
# Lines handed to the pool per block, in chunks: bounds memory, since Pool.imap alone would
# read the whole input into its task queue ahead of the workers.
_CHUNKS_PER_WORKER_PER_BLOCK = 16

_In = TypeVar("_In")
_Out = TypeVar("_Out")


@dataclass(frozen=True)
class TokenizerSpec:
    """Enough to rebuild the same tokenizer in a worker process (hashable, picklable)."""

    tokenizer_type: str
    model_path: str | None = None
    vocab_size: int | None = None
    # (mtime_ns, size) of the model file: a model retrained in place gets a new cache entry.
    model_stamp: tuple[int, int] | None = None


@dataclass
class PreprocessStats:
    """What preprocess_jsonl wrote and what it skipped, by reason."""

    documents: int = 0
    tokens: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.documents / self.seconds if self.seconds > 0 else 0.0
        skipped = ", ".join(f"{r}={self.skipped[r]}" for r in SKIP_REASONS if self.skipped[r])
        lines = [
            f"documents: {self.documents}",
            f"tokens: {self.tokens}",
            f"skipped lines: {sum(self.skipped.values())}" + (f" ({skipped})" if skipped else ""),
            f"time: {self.seconds:.1f}s ({rate:.0f} docs/s)",
        ]
        lines += [f"wrote: {prefix}.bin/.idx  [{key}]" for key, prefix in self.outputs.items()]
        return "\n".join(lines)


@functools.lru_cache(maxsize=4)
def _tokenizer_for(spec: TokenizerSpec) -> SentencePieceTokenizer | NullTokenizer:
    # Memoized per process: pool workers forked after the parent's first call inherit the loaded
    # model instead of reloading it for every chunk of lines they are handed.
    return build_tokenizer(spec.tokenizer_type, spec.model_path, spec.vocab_size)


def _encode_line(
    spec: TokenizerSpec,
    json_keys: tuple[str, ...],
    append_eod: bool,
    dtype: type,
    source: str,
    numbered_line: tuple[int, bytes],
) -> tuple[str, list[numpy.ndarray]]:
    """Return ("ok", token arrays per key) or (skip reason, [])."""
    lineno, raw = numbered_line
    if not raw.strip():
        return "empty", []
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not_utf8", []
    except ValueError:
        return "malformed_json", []
    if not isinstance(record, dict):
        return "malformed_json", []
    texts = []
    for key in json_keys:
        if key not in record:
            return "missing_key", []
        if not isinstance(record[key], str):
            return "not_a_string", []
        if not record[key].strip():
            # All keys of a line are kept or dropped together so per-key shards stay aligned.
            return "empty", []
        texts.append(record[key])
    tokenizer = _tokenizer_for(spec)
    arrays = []
    for text in texts:
        try:
            ids = tokenizer.tokenize(text)
        except MegatronSotaError as err:
            raise MegatronSotaError(f"{source} line {lineno}: {err}") from None
        if append_eod:
            ids = list(ids) + [tokenizer.eod]
        arrays.append(numpy.asarray(ids, dtype=dtype))
    return "ok", arrays


def _numbered_lines(path: str) -> Iterator[tuple[int, bytes]]:
    with open_jsonl(path) as f:
        yield from enumerate(f, start=1)


def _ordered_pool_map(
    pool: multiprocessing.pool.Pool,
    fn: Callable[[_In], _Out],
    items: Iterator[_In],
    chunksize: int,
    block: int,
) -> Iterator[_Out]:
    """pool.imap in input order, but never more than `block` items read ahead of the consumer."""
    while True:
        batch = list(itertools.islice(items, block))
        if not batch:
            return
        yield from pool.imap(fn, batch, chunksize=chunksize)


def output_prefix_for(output_prefix: str, key: str) -> str:
    """Megatron-LM's naming: <output-prefix>_<key>_document."""
    return f"{output_prefix}_{key}_document"


def _remove_quietly(path: str) -> None:
    if os.path.exists(path):
        os.remove(path)


def preprocess_jsonl(
    input_path: str,
    output_prefix: str,
    tokenizer_type: str,
    tokenizer_model: str | None = None,
    vocab_size: int | None = None,
    json_keys: Sequence[str] = ("text",),
    append_eod: bool = False,
    workers: int = 1,
    chunksize: int = 64,
    log_interval: int = 1000,
    progress: bool = True,
) -> PreprocessStats:
    """Tokenize every JSONL line, in input order, into one indexed shard per json key."""
    if workers < 1:
        raise MegatronSotaError(f"workers: expected an integer >= 1, found {workers}")
    if not json_keys:
        raise MegatronSotaError("json keys: expected at least one key, found none")
    open_jsonl(input_path).close()  # a missing input fails before any output is created
    stamp = None
    if tokenizer_model and os.path.isfile(tokenizer_model):
        info = os.stat(tokenizer_model)
        stamp = (info.st_mtime_ns, info.st_size)
    spec = TokenizerSpec(tokenizer_type, tokenizer_model, vocab_size, stamp)
    tokenizer = _tokenizer_for(spec)
    dtype = DType.optimal_dtype(tokenizer.vocab_size)
    keys = tuple(json_keys)
    encode = functools.partial(_encode_line, spec, keys, append_eod, dtype, input_path)

    parent = os.path.dirname(os.path.abspath(output_prefix))
    os.makedirs(parent, exist_ok=True)
    finals = {key: output_prefix_for(output_prefix, key) for key in keys}
    tmp_tag = f".tmp-{os.getpid()}"
    temps = {key: f"{prefix}{tmp_tag}" for key, prefix in finals.items()}

    stats = PreprocessStats()
    start = time.perf_counter()
    builders: dict[str, IndexedDatasetBuilder] = {}
    pool = None
    try:
        for key in keys:
            builders[key] = IndexedDatasetBuilder(f"{temps[key]}.bin", dtype=dtype)
        lines = _numbered_lines(input_path)
        if workers > 1:
            pool = multiprocessing.Pool(workers)
            block = workers * chunksize * _CHUNKS_PER_WORKER_PER_BLOCK
            results: Iterable[tuple[str, list[numpy.ndarray]]] = _ordered_pool_map(
                pool, encode, lines, chunksize, block
            )
        else:
            results = map(encode, lines)
        with tqdm(
            unit="docs", disable=not progress, miniters=log_interval, mininterval=1.0
        ) as bar:
            for status, arrays in results:
                if status != "ok":
                    stats.skipped[status] += 1
                    continue
                for key, array in zip(keys, arrays):
                    builders[key].add_document(array, [len(array)])
                    stats.tokens += len(array)
                stats.documents += 1
                bar.update(1)
        if pool is not None:
            pool.close()
            pool.join()
            pool = None
        if stats.documents == 0:
            raise MegatronSotaError(
                f"input file {input_path!r}: expected at least one usable line with keys "
                f"{list(keys)}, found none ({sum(stats.skipped.values())} lines skipped: "
                f"{dict(stats.skipped)})"
            )
        for key, builder in builders.items():
            builder.finalize(f"{temps[key]}.idx")
        for key in keys:
            # Drop the old .idx first: a crash mid-rename then leaves a .bin without .idx,
            # which check_shards reports, never a new .bin paired with a stale .idx.
            _remove_quietly(f"{finals[key]}.idx")
            os.replace(f"{temps[key]}.bin", f"{finals[key]}.bin")
            os.replace(f"{temps[key]}.idx", f"{finals[key]}.idx")
        stats.outputs = dict(finals)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        for key, builder in builders.items():
            builder.data_file.close()
            _remove_quietly(f"{temps[key]}.bin")
            _remove_quietly(f"{temps[key]}.idx")
    stats.seconds = time.perf_counter() - start
    return stats
