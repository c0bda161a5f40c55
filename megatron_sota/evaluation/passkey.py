"""Synthetic passkey (needle-in-a-haystack) prompts: a filler text to a length in the model's tokens, a key at a depth.

Samples are a pure function of (task settings, tokenizer): no model, no files written. Scoring is exact
match (runner.py); the grid of accuracy by length and depth is passkey_report.py's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation.task_spec import TaskSpec

NEEDLE = " The pass key is {key}. Remember it."
QUESTION = "\nWhat is the pass key? The pass key is"
KEY_RANGE = (10000, 100000)
"""Five-digit keys: one in 90,000, so a model that cannot retrieve it scores (nearly) zero."""
# Written for this repository; plain sentences without digits, so no number in the haystack competes with the key.
DEFAULT_FILLER = (
    "The river runs past the mill and under the old stone bridge. "
    "Boats carry grain and wool down to the town by the sea. "
    "In the morning the market opens and the square fills with voices. "
    "Children walk to school along the road beside the orchard. "
    "In the evening the lamps are lit and the streets grow quiet again. "
)


@dataclass(frozen=True)
class PasskeySample:
    length: int
    depth: float
    index: int
    """The sample's number within its (length, depth) cell."""
    key: str
    tokens: list[int]
    """The prompt: `length` tokens, ending with the question."""
    needle_start: int
    """Token position of the needle: round(depth * filler tokens)."""


def read_filler(spec: TaskSpec) -> str:
    """The haystack text: the task's `filler` file, else DEFAULT_FILLER."""
    if spec.filler is None:
        return DEFAULT_FILLER
    try:
        with open(spec.filler, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise MegatronSotaError(f"task {spec.name}: key 'filler': expected a readable UTF-8 text file, found {spec.filler} ({err})") from None
    if not text.strip():
        raise MegatronSotaError(f"task {spec.name}: key 'filler': expected a non-empty text file, found {spec.filler} empty")
    return text


def samples_per_cell(spec: TaskSpec, limit: int | None) -> int:
    """`samples`, capped by the task's and the caller's limit (for passkey a limit counts samples per cell)."""
    return min([spec.samples, *(b for b in (spec.limit, limit) if b is not None)])


def passkey_samples(spec: TaskSpec, tokenizer, limit: int | None = None) -> list[PasskeySample]:
    """Every sample, by length, then depth, then index; the same for the same settings and tokenizer."""
    filler = tokenizer.tokenize(read_filler(spec))
    question = tokenizer.tokenize(QUESTION)
    out = []
    for length in spec.lengths:
        for depth in spec.depths:
            for index in range(samples_per_cell(spec, limit)):
                # Seeded by a string (SHA-512 in `random`, not Python's salted hash): the same in every run.
                rng = random.Random(f"{spec.seed}:{length}:{depth!r}:{index}")
                key = str(rng.randrange(*KEY_RANGE))
                needle = tokenizer.tokenize(NEEDLE.format(key=key))
                room = length - len(needle) - len(question)
                if room < 0:
                    raise MegatronSotaError(
                        f"task {spec.name}: key 'lengths': expected lengths of at least {len(needle) + len(question)} tokens "
                        f"(the needle and the question), found {length}"
                    )
                haystack = _repeated(filler, rng.randrange(len(filler)), room)
                at = round(depth * room)
                out.append(PasskeySample(length, depth, index, key, haystack[:at] + needle + haystack[at:] + question, at))
    return out


def _repeated(tokens: list[int], offset: int, count: int) -> list[int]:
    """`count` tokens of `tokens` repeated end to end, starting at `offset`."""
    copies = -(-(offset + count) // len(tokens))
    return (tokens * copies)[offset : offset + count]


def check_lengths_fit(spec: TaskSpec, max_positions: int, what: str = "max_position_embeddings") -> None:
    """Refuses a length whose prompt and answer budget exceed the model's positions, before any sample is built.

    `what` names `max_positions` in the message (the scorer's context is max_position_embeddings rounded down).
    """
    budget = spec.max_new_tokens
    too_long = [length for length in spec.lengths if length + budget > max_positions]
    if too_long:
        raise MegatronSotaError(
            f"{spec.source or f'task {spec.name}'}: key 'lengths': expected lengths <= {max_positions - budget} "
            f"(the model's {what} {max_positions} less max_new_tokens {budget}), found {too_long[0]}"
        )
