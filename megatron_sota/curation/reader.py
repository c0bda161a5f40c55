"""The first step of a curation run: documents from JSONL(.gz/.zst), parquet or text files, with every bad record counted.

Files are opened by data/readers.py (the project's one reader); problems are recorded per file (and fatal
under strict), nothing is skipped without a count. It must not filter.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseReader

from megatron_sota.atomic_files import write_json
from megatron_sota.data.readers import READ_ERRORS, damage_found, open_input
from megatron_sota.errors import MegatronSotaError

# Problem kinds, as they appear in the report's per-file table.
MALFORMED_JSON = "malformed_json"
NOT_AN_OBJECT = "not_an_object"
MISSING_TEXT = "missing_text"
TEXT_NOT_STRING = "text_not_string"
EMPTY_TEXT = "empty_text"
UNREADABLE = "unreadable"
PROBLEM_KINDS = (MALFORMED_JSON, NOT_AN_OBJECT, MISSING_TEXT, TEXT_NOT_STRING, EMPTY_TEXT, UNREADABLE)
UNREADABLE_REASON = "unreadable_reason"
"""The audit's key for why a file could not be read to its end (the console repeats it)."""
# Error examples kept per file: enough to find the lines, bounded for files that are all bad.
EXAMPLES_PER_FILE = 5


class BadRecord(Exception):
    """One record that cannot become a document: its kind and what was found."""

    def __init__(self, kind: str, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.kind = kind


def _text_of(record: object, text_key: str, where: str) -> str:
    if not isinstance(record, dict):
        raise BadRecord(NOT_AN_OBJECT, where, f"expected a JSON object, found {type(record).__name__}")
    if text_key not in record:
        keys = ", ".join(sorted(map(str, record))[:8])
        raise BadRecord(MISSING_TEXT, where, f"expected a {text_key!r} field, found keys [{keys}]")
    text = record[text_key]
    if not isinstance(text, str):
        raise BadRecord(TEXT_NOT_STRING, where, f"expected {text_key!r} to be a string, found {type(text).__name__}")
    if not text.strip():
        raise BadRecord(EMPTY_TEXT, where, f"expected non-empty {text_key!r}, found only whitespace")
    return text


def _jsonl_records(path: str) -> Iterator[tuple[str, object]]:
    """(location, parsed record) per non-blank line; a bad line yields a BadRecord in place of the record."""
    with open_input(path) as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            if not raw.strip():
                continue
            try:
                yield where, json.loads(raw)
            except (UnicodeDecodeError, ValueError) as err:
                yield where, BadRecord(MALFORMED_JSON, where, f"expected one JSON object per line, found {err}")


def _parquet_records(path: str, text_key: str, id_key: str) -> Iterator[tuple[str, object]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    if text_key not in names:
        raise BadRecord(MISSING_TEXT, path, f"expected a {text_key!r} column, found columns {names}")
    row = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield f"{path}:row {row}", record


def _text_file_record(path: str, text_key: str) -> Iterator[tuple[str, object]]:
    with open(path, "rb") as handle:
        yield path, {text_key: handle.read().decode("utf-8"), "id": path}


class AuditedReader(BaseReader):
    """Reads this task's share of a list of input files (every world_size-th file, from rank on).

    Per file it counts documents and each kind of bad record; the counts go to
    ``<audit_dir>/<rank>.json`` (read by the report). With ``strict`` the first bad record raises.
    """

    name = "audited reader"

    def __init__(
        self,
        files: list[tuple[str, str]],
        audit_dir: str,
        source: str,
        text_key: str = "text",
        id_key: str = "id",
        strict: bool = False,
    ) -> None:
        super().__init__(text_key=text_key, id_key=id_key)
        self.files = files
        """(path, kind) with kind jsonl, parquet or text, in a fixed order."""
        self.audit_dir = audit_dir
        self.source = source
        self.strict = strict

    def _records(self, path: str, kind: str) -> Iterator[tuple[str, object]]:
        if kind == "parquet":
            return _parquet_records(path, self.text_key, self.id_key)
        if kind == "text":
            return _text_file_record(path, self.text_key)
        return _jsonl_records(path)

    def _document(self, record: dict, where: str, text: str) -> Document:
        metadata = {k: v for k, v in record.items() if k not in (self.text_key, self.id_key)}
        metadata["source"] = self.source
        metadata["origin"] = where
        doc_id = record.get(self.id_key)
        return Document(text=text, id=str(doc_id) if doc_id is not None else where, metadata=metadata)

    def _read_file(self, path: str, kind: str, audit: dict) -> Iterator[Document]:
        counts: Counter = Counter()
        examples: list[str] = []
        reason: dict[str, str] = {}

        def bad(problem: BadRecord) -> None:
            if self.strict:
                raise MegatronSotaError(f"{problem} (strict: bad input is fatal)") from None
            counts[problem.kind] += 1
            self.stat_update(f"bad_{problem.kind}")
            if len(examples) < EXAMPLES_PER_FILE:
                examples.append(str(problem))

        try:
            for where, record in self._records(path, kind):
                try:
                    if isinstance(record, BadRecord):
                        raise record
                    text = _text_of(record, self.text_key, where)
                except BadRecord as problem:
                    bad(problem)
                    continue
                counts["documents"] += 1
                yield self._document(record, where, text)
        except BadRecord as problem:  # the whole file (a parquet file without the text column)
            bad(problem)
        except (*READ_ERRORS, UnicodeDecodeError, ValueError) as err:
            # A truncated .gz or .zst, unreadable parquet, a text file that is not UTF-8: the documents
            # read before the error stay; the file is reported as unreadable from that point, with its
            # reason kept apart from the examples (which may be full) for the console's warning.
            if isinstance(err, READ_ERRORS):
                found = damage_found(err)
            else:
                found = f"expected a readable {kind} file, found {type(err).__name__}: {err}"
            unreadable = BadRecord(UNREADABLE, path, found)
            bad(unreadable)
            reason = {UNREADABLE_REASON: str(unreadable)}
        audit[path] = {"kind": kind, **{k: counts[k] for k in ("documents", *PROBLEM_KINDS) if counts[k]}, "examples": examples, **reason}

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        audit: dict[str, dict] = {}
        for path, kind in self.files[rank::world_size]:
            self.stat_update("input_files")
            for document in self._read_file(path, kind, audit):
                self.stat_update("documents")
                yield document
        write_json(os.path.join(self.audit_dir, f"{rank:05d}.json"), audit, indent=1)

