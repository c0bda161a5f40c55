"""What every tokenizer trainer is given: a seeded sample of input lines, a checked vocabulary size
and checked special tokens, and the record of what it wrote. Reads through readers.iter_texts only;
it must not train a model.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from megatron_sota.data.readers import expand_inputs, iter_texts
from megatron_sota.errors import MegatronSotaError

MAX_VOCAB_SIZE = 262_144
"""256k (Gemma's size); anything larger is almost certainly a typo for a smaller number."""
UINT16_VOCAB_LIMIT = 65_500
"""megatron-core's DType.optimal_dtype writes shards as int32 (twice the bytes) from this size on."""

# A cut between a non-space and a whitespace run that holds a line break: GPT-2's pre-tokenizer
# regex always ends a token there, so the pieces pre-tokenize exactly as the whole text does.
# Only ASCII whitespace is matched, so a cut is never made where the Rust regex sees no space.
_LINE_BREAK = re.compile(r"(?<=\S)(?=[ \t\r\f\v]*\n)")


@dataclass
class CorpusCounts:
    """How much of the input a trainer saw and used."""

    documents: int = 0
    lines_seen: int = 0
    lines_used: int = 0
    lines_too_long: int = 0


@dataclass(frozen=True)
class TrainedTokenizer:
    """Where a trained tokenizer went and what it was trained on."""

    library: str
    model_path: str
    """What preprocess_data.py's --tokenizer-model takes: <prefix>.model, or the HF directory."""
    files: tuple[str, ...]
    """Every file written."""
    vocab_size: int
    preprocess_flags: tuple[tuple[str, ...], ...]
    """One set of tools/preprocess_data.py flags per tokenizer type that can read these files."""
    corpus: CorpusCounts
    seconds: float


def split_at_line_breaks(text: str) -> list[str]:
    """Pieces of `text` that each start at a line break (with any whitespace before it); joined
    they are `text`, and they pre-tokenize (byte-level BPE) into the same words as `text`."""
    return _LINE_BREAK.split(text)


def _iter_lines(
    inputs: Sequence[str],
    json_key: str,
    counts: CorpusCounts,
    keep_line_breaks: bool,
    max_bytes: int | None,
) -> Iterator[str]:
    for text in iter_texts(inputs, json_key):
        counts.documents += 1
        for line in split_at_line_breaks(text) if keep_line_breaks else text.splitlines():
            if not keep_line_breaks and not line.strip():
                continue
            if max_bytes is not None and len(line.encode("utf-8")) > max_bytes:
                counts.lines_too_long += 1
                continue
            counts.lines_seen += 1
            yield line


def reservoir_sample(items: Iterable[str], size: int, seed: int) -> list[str]:
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


class TrainingLines:
    """The lines a trainer learns from: all of them streamed, or a seeded sample of `sample_size`.

    Trainers call back into this iterator from native code, which turns a Python exception into
    a generic RuntimeError; `error` keeps the original so the caller can raise it instead.
    """

    def __init__(
        self,
        inputs: Sequence[str],
        json_key: str,
        *,
        sample_size: int,
        seed: int,
        keep_line_breaks: bool,
        max_bytes: int | None = None,
        progress: bool = True,
    ) -> None:
        if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 0:
            raise MegatronSotaError(
                f"--input-sentence-size: expected an integer >= 0 (0 = every line), "
                f"found {sample_size!r}"
            )
        expand_inputs(inputs)  # a missing input fails here, naming --input, before any work
        self.inputs = list(inputs)
        self.json_key = json_key
        self.sample_size = sample_size
        self.counts = CorpusCounts()
        self.error: Exception | None = None
        lines: Iterable[str] = _iter_lines(
            inputs, json_key, self.counts, keep_line_breaks, max_bytes
        )
        lines = tqdm(lines, desc="reading lines", unit=" lines", disable=not progress)
        if sample_size > 0:
            lines = reservoir_sample(lines, sample_size, seed)
        self._lines = lines

    def _guarded(self, lines: Iterable[str]) -> Iterator[str]:
        try:
            yield from lines
        except Exception as err:
            self.error = err
            raise

    def __iter__(self) -> Iterator[str]:
        return self._guarded(self._lines)

    @property
    def known_length(self) -> int | None:
        """Lines that will be fed: known up front for a sample, not for a stream."""
        return len(self._lines) if isinstance(self._lines, list) else None

    def finish(self) -> CorpusCounts:
        """Counts after training consumed the lines; raises if there was no text at all."""
        if self.counts.lines_seen == 0:
            raise self.no_text_error()
        self.counts.lines_used = self._lines_used()
        return self.counts

    def _lines_used(self) -> int:
        return min(self.counts.lines_seen, self.sample_size or self.counts.lines_seen)

    def no_text_error(self) -> MegatronSotaError:
        return MegatronSotaError(
            f"--input {self.named()}: expected records with non-empty {self.json_key!r} "
            f"text (--json-key), found none"
        )

    def named(self) -> str:
        """The inputs as given, shortened when a shell glob expanded into many."""
        shown = " ".join(self.inputs[:3])
        return shown + (f" and {len(self.inputs) - 3} more" if len(self.inputs) > 3 else "")

    def describe(self) -> str:
        """The corpus, for error messages."""
        return (
            f"{self.named()} ({self.counts.documents} documents, {self._lines_used()} of "
            f"{self.counts.lines_seen} lines used)"
        )


def check_vocab_size(vocab_size: int, reserved: int, library: str, reserved_what: str) -> None:
    """Reject sizes that leave no room to learn a piece, or that exceed MAX_VOCAB_SIZE."""
    low = reserved + 1
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not (
        low <= vocab_size <= MAX_VOCAB_SIZE
    ):
        raise MegatronSotaError(
            f"--vocab-size: expected an integer from {low} ({reserved_what} + at least one "
            f"learned piece) to {MAX_VOCAB_SIZE} for {library}, found {vocab_size!r}"
        )


def check_special_tokens(tokens: Sequence[str], built_in: Sequence[str]) -> list[str]:
    """The tokens as a list, or an error naming the first empty, spaced, repeated or built-in one."""
    seen: set[str] = set()
    reserved = set(built_in)
    shown = ", ".join(built_in[:4]) + (", ..." if len(built_in) > 4 else "")
    for token in tokens:
        if not isinstance(token, str) or not token or any(c.isspace() for c in token):
            raise MegatronSotaError(
                f"--special-tokens: expected non-empty tokens without whitespace, found {token!r}"
            )
        if token in reserved:
            raise MegatronSotaError(
                f"--special-tokens: expected tokens other than the built-in ones ({shown}), "
                f"found {token!r}"
            )
        if token in seen:
            raise MegatronSotaError(
                f"--special-tokens: expected each token once, found {token!r} twice"
            )
        seen.add(token)
    return list(tokens)
