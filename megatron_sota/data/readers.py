"""The one reader of input files: preprocessing, tokenizer training and curation find and open their inputs here.

JSONL (plain, .gz, .zst), parquet and plain text files, named as a file, a glob or a directory; a truncated
or corrupt compressed file raises (READ_ERRORS), never ends early. It must not parse JSON or tokenize.
"""

from __future__ import annotations

import functools
import glob
import gzip
import io
import json
import mmap
import os
import zlib
from dataclasses import dataclass
from typing import IO, Iterator, Sequence

from megatron_sota.errors import MegatronSotaError

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".jsonl.zst", ".json.zst")
PARQUET_SUFFIXES = (".parquet",)
# Bytes of input per chunk handed to a worker: large enough to amortize inter-process
# overhead, small enough that the last chunks do not leave workers idle (at ~2 MB/s per
# core, a 4 MB chunk is a 2 s tail) and that workers x in-flight chunks stays small.
DEFAULT_CHUNK_BYTES = 1024 * 1024
# Near the end of a plain JSONL piece chunks shrink to this share of the bytes left (down to
# TAIL_MIN_CHUNK_BYTES), so the workers finish together instead of one tokenizing a last
# full-size chunk while the others idle (~5% of a 25 MB run on 2 cores with 1 MB chunks).
TAIL_CHUNKS = 8
TAIL_MIN_CHUNK_BYTES = 32 * 1024
READ_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error)
"""What reading a damaged file raises: OSError (disk, gzip.BadGzipFile, corrupt zstd), EOFError (a
truncated .gz or .zst), zlib.error (corrupt deflate data)."""


def damage_found(err: BaseException) -> str:
    """What a file that raised one of READ_ERRORS is, in the words every reader of inputs reports it with."""
    return f"expected a complete, readable file, found a damaged or truncated one ({type(err).__name__}: {err})"


@dataclass(frozen=True)
class InputFile:
    """One input file and how its records are framed."""

    path: str
    kind: str
    """jsonl (one JSON object per line), parquet (one row per record) or text (whole file)."""
    size: int
    """Bytes on disk; progress is measured in these."""

    @property
    def splittable(self) -> bool:
        """Plain JSONL can be cut into byte ranges at line boundaries (for partitions)."""
        return self.kind == "jsonl" and not self.path.endswith((".gz", ".zst"))


@dataclass(frozen=True)
class Piece:
    """A byte range of one input file (the whole file unless it is splittable)."""

    file: InputFile
    start: int = 0
    end: int | None = None
    """Exclusive; None = to the end. A line belongs to the piece its first byte falls in."""


@dataclass
class RawChunk:
    """Consecutive records of one piece, still undecoded, plus where they came from."""

    piece: Piece
    kind: str
    first_record: int
    """1-based line (jsonl) or row (parquet) number of payloads[0] within its piece."""
    payloads: list
    """jsonl: one bytes block of whole lines; parquet: row dicts; text: one bytes file body.
    Empty when byte_range is set."""
    disk_bytes: int
    """Bytes of the file on disk consumed by this chunk (compressed bytes for .gz/.zst)."""
    byte_range: tuple[int, int] | None = None
    """Plain JSONL: [start, stop) of whole lines in the file, read where the chunk is decoded (a worker),
    so the reading process neither reads nor sends the text."""


def _kind_of(path: str) -> str:
    lower = path.lower()
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return "text"


def _walk(directory: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.join(root, name) for name in sorted(files) if not name.startswith(".")]
    return found


def expand_inputs(inputs: str | Sequence[str]) -> list[InputFile]:
    """Files named by each input (a file, a glob or a directory), in a stable sorted order.

    In a directory, JSONL and parquet files are read as records and every other file as one
    plain-text document, so a tree of .txt/.md/.py files is a corpus as it stands.
    """
    specs = [inputs] if isinstance(inputs, str) else list(inputs)
    if not specs:
        raise MegatronSotaError("--input: expected at least one file, glob or directory, found none")
    paths: list[str] = []
    for spec in specs:
        if os.path.isdir(spec):
            matched = _walk(spec)
        elif os.path.isfile(spec):
            matched = [spec]
        else:
            matched = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        if not matched:
            raise MegatronSotaError(
                f"--input {spec!r}: expected an existing file, a directory or a glob matching "
                f"files, found nothing"
            )
        paths += matched
    return [InputFile(p, _kind_of(p), os.path.getsize(p)) for p in paths]


class _CountingReader(io.RawIOBase):
    """Wraps the on-disk file so progress can count compressed bytes as they are consumed."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = self.raw.readinto(buffer)
        self.consumed += n or 0
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def open_input(path: str) -> IO[bytes]:
    """The bytes of an input file: decompressed for .gz and .zst, whose damage raises one of READ_ERRORS."""
    return _open_decompressed(path)[0] if path.endswith((".gz", ".zst")) else open(path, "rb")


def _open_decompressed(path: str) -> tuple[IO[bytes], _CountingReader]:
    counter = _CountingReader(open(path, "rb"))
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=io.BufferedReader(counter)), counter
    return io.BufferedReader(_ZstdFrames(counter), buffer_size=1 << 20), counter


class _ZstdFrames(io.RawIOBase):
    """Decompresses concatenated zstd frames; a file that ends inside a frame raises EOFError, as gzip does.

    zstandard's stream_reader returns what it has when the input stops mid-frame, so a
    truncated download would silently lose its tail. Corrupt frames raise OSError.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        import zstandard  # only needed for .zst inputs

        self.raw = raw
        self._new = zstandard.ZstdDecompressor().decompressobj
        self._error = zstandard.ZstdError
        self._frame = self._new()
        self._in_frame = False
        self._out = b""
        self._read = 0
        self._frame_start = 0
        """Byte offsets in the file: read so far, and where the frame being decompressed began."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        while not self._out:
            data = self.raw.read(1 << 20)
            if not data:
                if self._in_frame:
                    raise EOFError(
                        f"truncated zstd frame: the file ends at byte {self._read:,}, inside the frame that "
                        f"starts at byte {self._frame_start:,}"
                    )
                return 0
            self._read += len(data)
            while data:
                self._in_frame = True
                try:
                    self._out += self._frame.decompress(data)
                except self._error as err:
                    raise OSError(f"corrupt zstd data: {err}") from err
                data = b""
                if self._frame.eof:  # frame complete: the rest starts the next one
                    data, self._frame, self._in_frame = self._frame.unused_data, self._new(), False
                    self._frame_start = self._read - len(data)
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def close(self) -> None:
        self.raw.close()
        super().close()


def _jsonl_chunks(piece: Piece, chunk_bytes: int) -> Iterator[RawChunk]:
    try:
        if piece.file.splittable:
            yield from _jsonl_ranges(piece, chunk_bytes)
        else:
            yield from _jsonl_blocks(piece, chunk_bytes)
    except READ_ERRORS as err:
        raise MegatronSotaError(
            f"input file {piece.file.path!r}: {damage_found(err)}; records read before it are kept only "
            f"in finished partitions"
        ) from err


def _line_boundary(view: mmap.mmap, offset: int) -> int:
    """The first line start at or after `offset` (a line belongs to the range its first byte falls in)."""
    if offset <= 0:
        return 0
    if offset >= len(view):
        return len(view)
    newline = view.find(b"\n", offset - 1)
    return len(view) if newline < 0 else newline + 1


def _jsonl_ranges(piece: Piece, chunk_bytes: int) -> Iterator[RawChunk]:
    # Plain JSONL: the chunks are byte ranges cut at line ends, found through a memory map; this
    # process touches only the newlines it counts for record numbers, the workers read the text.
    with open(piece.file.path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
            position = _line_boundary(view, piece.start)
            end = size if piece.end is None else _line_boundary(view, piece.end)
            first = 1
            while position < end:
                left = end - position
                want = min(chunk_bytes, max(left // TAIL_CHUNKS, TAIL_MIN_CHUNK_BYTES))
                stop = end if want >= left else min(_line_boundary(view, position + want), end)
                yield RawChunk(piece, "jsonl", first, [], stop - position, (position, stop))
                # Only a piece's last chunk can end without a newline: no next chunk to number.
                first += view[position:stop].count(b"\n")
                position = stop


def _jsonl_blocks(piece: Piece, chunk_bytes: int) -> Iterator[RawChunk]:
    # Whole-line blocks are cut here and split into lines by the workers, so the reading
    # process does a few C-speed calls per block instead of Python work per line.
    path = piece.file.path
    counter = None
    if piece.file.splittable:
        stream: IO[bytes] = open(path, "rb")
    else:
        stream, counter = _open_decompressed(path)
    with stream:
        if piece.start > 0:
            # Start on the first line that begins inside the range (the previous piece
            # owns a line that straddles the boundary).
            stream.seek(piece.start - 1)
            if stream.read(1) != b"\n":
                stream.readline()
        left = None if piece.end is None else max(piece.end - stream.tell(), 0)
        pending = b""
        first = 1
        reported = stream.tell() if counter is None else 0
        while True:
            want = chunk_bytes if left is None else min(chunk_bytes, left)
            data = stream.read(want) if want > 0 else b""
            if left is not None:
                left -= len(data)
            buffer = pending + data
            at_end = not data
            if left == 0 and not at_end and not buffer.endswith(b"\n"):
                # The piece ends inside a line that started in it: that line is ours.
                buffer += stream.readline()
                left, at_end = -1, False
            cut = len(buffer) if at_end else buffer.rfind(b"\n") + 1
            block, pending = buffer[:cut], buffer[cut:]
            if block:
                done = stream.tell() if counter is None else counter.consumed
                yield RawChunk(piece, "jsonl", first, [block], done - reported)
                reported = done
                first += block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            if at_end or left == -1 or (left == 0 and not pending):
                return


def _parquet_chunks(piece: Piece, chunk_bytes: int, columns: Sequence[str]) -> Iterator[RawChunk]:
    import pyarrow.parquet  # only needed for parquet inputs

    path = piece.file.path
    try:
        parquet = pyarrow.parquet.ParquetFile(path)
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        raise MegatronSotaError(
            f"input file {path!r}: expected a parquet file, found one pyarrow cannot open ({err})"
        ) from err
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
        raise MegatronSotaError(
            f"input file {path!r}: expected text column(s) {missing}, found "
            f"columns {parquet.schema_arrow.names}"
        )
    row_bytes = piece.file.size / max(parquet.metadata.num_rows, 1)
    # About chunk_bytes of text per batch; text is typically ~3x its compressed size.
    batch_rows = max(16, int(chunk_bytes / max(row_bytes * 3, 1.0)))
    first = 1
    for batch in parquet.iter_batches(batch_size=batch_rows, columns=list(columns)):
        records = batch.to_pylist()
        yield RawChunk(piece, "parquet", first, records, int(len(records) * row_bytes))
        first += len(records)


def _text_chunks(piece: Piece) -> Iterator[RawChunk]:
    with open(piece.file.path, "rb") as f:
        body = f.read()
    yield RawChunk(piece, "text", 1, [body], piece.file.size)


def read_chunks(
    piece: Piece, keys: Sequence[str], chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[RawChunk]:
    """Records of one piece in file order, framed into chunks of about chunk_bytes."""
    if piece.file.kind == "jsonl":
        return _jsonl_chunks(piece, chunk_bytes)
    if piece.file.kind == "parquet":
        return _parquet_chunks(piece, chunk_bytes, keys)
    return _text_chunks(piece)


def iter_payloads(chunk: RawChunk) -> Iterator[tuple[int, object]]:
    """(record number, payload) for every record of a chunk; JSONL blocks split into lines."""
    if chunk.kind != "jsonl":
        yield from enumerate(chunk.payloads, start=chunk.first_record)
        return
    block = chunk.payloads[0] if chunk.byte_range is None else _read_range(chunk)
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    yield from enumerate(lines, start=chunk.first_record)


def _read_range(chunk: RawChunk) -> bytes:
    start, stop = chunk.byte_range  # type: ignore[misc]
    path = chunk.piece.file.path
    try:
        with open(path, "rb") as f:
            f.seek(start)
            block = f.read(stop - start)
    except OSError as err:
        raise MegatronSotaError(f"input file {path!r}: {damage_found(err)}") from err
    if len(block) != stop - start:
        raise MegatronSotaError(
            f"input file {path!r}: expected bytes {start:,} to {stop:,}, found the file ending at "
            f"{start + len(block):,} (changed while it was being read?)"
        )
    return block


def decode_record(kind: str, payload: object, keys: Sequence[str]) -> tuple[dict | None, str]:
    """(record, "ok") or (None, skip reason) for one raw payload of a chunk."""
    if kind == "parquet":
        record = payload
    elif kind == "text":
        try:
            return {keys[0]: payload.decode("utf-8")}, "ok"  # type: ignore[union-attr]
        except UnicodeDecodeError:
            return None, "not_utf8"
    else:
        try:
            record = json.loads(payload)  # type: ignore[arg-type]
        except UnicodeDecodeError:
            return None, "not_utf8"
        except ValueError:
            if not payload.strip():  # type: ignore[union-attr]
                return None, "blank_line"
            return None, "malformed_json"
    if not isinstance(record, dict):
        return None, "malformed_json"
    return record, "ok"


@functools.lru_cache(maxsize=256)
def line_offset(piece: Piece) -> int:
    """Lines of the file before the piece's first line, to report file-wide line numbers."""
    if piece.start == 0 or piece.file.kind != "jsonl":
        return 0
    newlines = 0
    with open(piece.file.path, "rb") as f:
        left = piece.start
        while left > 0:
            block = f.read(min(left, 1 << 24))
            newlines += block.count(b"\n")
            left -= len(block)
        f.seek(piece.start - 1)
        straddles = f.read(1) != b"\n"
    # A line straddling the start belongs to the previous piece.
    return newlines + (1 if straddles else 0)


def record_location(piece: Piece, number: int) -> str:
    """'file:line N' (or row, for parquet) of a piece's record `number`, counted file-wide."""
    if piece.file.kind == "text":
        return piece.file.path
    unit = "row" if piece.file.kind == "parquet" else "line"
    return f"{piece.file.path}:{unit} {line_offset(piece) + number}"


def iter_texts(inputs: str | Sequence[str], key: str) -> Iterator[str]:
    """Non-empty text under `key` of every well-formed record (tokenizer training's input)."""
    for file in expand_inputs(inputs):
        for chunk in read_chunks(Piece(file), (key,)):
            for _, payload in iter_payloads(chunk):
                record, status = decode_record(chunk.kind, payload, (key,))
                text = record.get(key) if record is not None else None
                if isinstance(text, str) and text.strip():
                    yield text
