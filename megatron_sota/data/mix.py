"""Resolves the `data` config (named sources, or flat paths) into megatron-core's flat blend.

Checks every shard the blend will read (files, index, vocabulary, documents per split) before any
process group exists; it builds no datasets and reads no tokens beyond shard_checks' scan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy
from megatron.core.datasets.blended_megatron_dataset_config import (
    convert_split_vector_to_split_matrix,
    parse_and_normalize_split,
)
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_sota.config.run import DataConfig
from megatron_sota.data.shard_checks import check_shard
from megatron_sota.errors import MegatronSotaError

FLAT_SOURCE = "default"
"""The name of the one source a run with flat data.paths has."""

SPLIT_NAMES = ("train", "valid", "test")


@dataclass(frozen=True)
class BlendEntry:
    """One prefix of the blend and where it came from."""

    source: str
    prefix: str
    config_key: str
    """e.g. data.sources.web.paths[1]: error messages and the report name it."""
    share: float
    """Planned fraction of every split's samples: source share x share within the source."""
    tokens: int
    documents: int


@dataclass(frozen=True)
class ResolvedBlend:
    entries: tuple[BlendEntry, ...]
    source_shares: dict[str, float]
    """Normalised source weights, in config order (sources with weight 0 are left out)."""
    megatron_weights: tuple[float, ...]
    """What megatron-core's builder gets per entry (it normalises them itself)."""

    @property
    def prefixes(self) -> list[str]:
        return [e.prefix for e in self.entries]


@dataclass(frozen=True)
class _Source:
    name: str
    key: str
    weight: float
    paths: list[str]
    weights: list[float] | None


def _sources(data: DataConfig) -> list[_Source]:
    if data.sources:
        return [
            _Source(name, f"data.sources.{name}", float(s.weight), list(s.paths), s.weights)
            for name, s in data.sources.items()
            if s.weight  # weight 0 leaves the source out; validation has refused null and negatives
        ]
    return [_Source(FLAT_SOURCE, "data", 1.0, list(data.paths), data.weights)]


def _check_documents(prefix: str, key: str, split: list[float]) -> int:
    """Refuses a prefix whose train/valid/test part holds no tokens; returns its document count.

    megatron-core would loop forever computing epochs for such a part (GPTDataset._get_num_epochs).
    """
    dataset = IndexedDataset(prefix, mmap=True)
    lengths = dataset.sequence_lengths
    documents = len(dataset.document_indices) - 1
    # The same split arithmetic as BlendedMegatronDatasetBuilder._build_megatron_dataset_splits.
    matrix = convert_split_vector_to_split_matrix(parse_and_normalize_split(",".join(str(x) for x in split)))
    for name, bounds in zip(SPLIT_NAMES, matrix):
        if bounds is None:
            continue
        begin, end = round(bounds[0] * float(len(lengths))), round(bounds[1] * float(len(lengths)))
        if int(numpy.sum(lengths[begin:end], dtype=numpy.int64)) == 0:
            del dataset
            raise MegatronSotaError(
                f"{key} = {prefix!r}: expected at least one document with tokens in the {name} split, found "
                f"none (data.split={list(split)} gives it documents [{begin}, {end}) of {documents}); use a shard "
                f"with more documents or a data.split with 0 for {name}"
            )
    del dataset
    return documents


def _check_prefix(prefix: str, key: str, position: int, vocab_size: int, split: list[float]) -> tuple[int, int]:
    bin_path = f"{prefix}.bin"
    if os.path.isfile(bin_path) and os.path.isfile(f"{prefix}.idx") and os.path.getsize(bin_path) == 0:
        # What megatron-core's builder writes for zero documents; its reader then fails to mmap it.
        raise MegatronSotaError(
            f"{key}[{position}] = {prefix!r}: expected at least one document, found an empty shard "
            f"({bin_path} has 0 bytes)"
        )
    try:
        tokens = check_shard(prefix, vocab_size, position, key)
    except MegatronSotaError as err:
        if f"{key}[{position}]" in str(err):
            raise
        raise MegatronSotaError(f"{key}[{position}]: {err}") from None
    return tokens, _check_documents(prefix, f"{key}[{position}]", split)


def resolve_blend(data: DataConfig, vocab_size: int) -> ResolvedBlend:
    """Checks every shard (reporting all failures at once) and returns the blend.

    `data` must have passed validate_job.
    """
    sources = _sources(data)
    checked: dict[str, list[tuple[str, int, float, int, int]]] = {}
    problems: list[str] = []
    for source in sources:
        given = source.weights if source.weights is not None else [None] * len(source.paths)
        checked[source.name] = []
        for position, (prefix, weight) in enumerate(zip(source.paths, given)):
            if weight == 0:
                continue  # left out of the run on purpose: its files need not exist
            try:
                tokens, documents = _check_prefix(prefix, f"{source.key}.paths", position, vocab_size, data.split)
            except MegatronSotaError as err:
                problems.append(str(err))
                continue
            within = float(weight) if weight is not None else float(tokens)
            checked[source.name].append((prefix, position, within, tokens, documents))
    if len(problems) == 1:
        raise MegatronSotaError(problems[0])
    if problems:
        raise MegatronSotaError(f"{len(problems)} shards of the blend failed their checks:\n  - " + "\n  - ".join(problems))

    total = sum(s.weight for s in sources)
    shares = {s.name: s.weight / total for s in sources}
    entries: list[BlendEntry] = []
    raw: list[float] = []
    for source in sources:
        within_total = sum(c[2] for c in checked[source.name])
        for prefix, position, within, tokens, documents in checked[source.name]:
            entries.append(
                BlendEntry(
                    source=source.name,
                    prefix=prefix,
                    config_key=f"{source.key}.paths[{position}]",
                    share=shares[source.name] * within / within_total,
                    tokens=tokens,
                    documents=documents,
                )
            )
            raw.append(within)
    # One source: its own weights as before (megatron-core normalises them); several: the products.
    weights = tuple(raw) if len(sources) == 1 else tuple(e.share for e in entries)
    return ResolvedBlend(entries=tuple(entries), source_shares=shares, megatron_weights=weights)
