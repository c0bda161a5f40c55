"""One rollout batch of PPO/GRPO as the training steps read it: rows of prompt + response, per-token arrays, stored.

It holds, orders and stores rows; it must not generate, score or compute advantages (posttrain/rollout.py does).

Row layout (every array [rows, width], right padded; width: the batch's longest prompt + response rounded up to a
multiple of 8, at most train.seq_length): `tokens` is the prompt then the response; position t
predicts token t + 1, so `action_mask[t]` is true where tokens[t + 1] is a response token (the response's tokens
are the actions; the prompt and the padding never are). Per-token arrays are aligned to positions the same way.
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional

import torch

from megatron_sota.atomic_files import write_bytes
from megatron_sota.errors import MegatronSotaError

ROLLOUT_DIR = "rollouts"
"""Where a run keeps its rollout batches (the run directory's subdirectory), so that a resumed run that stops
inside an iteration trains on the very rows the lost weights generated."""
_FORMAT = 1


@dataclass
class Rollout:
    index: int
    """The rollout batch's number (0, 1, ...): steps index x steps_per_rollout + 1 ... train on it."""
    tokens: torch.Tensor
    """[rows, seq] int64: prompt, response, padding."""
    action_mask: torch.Tensor
    """[rows, seq] bool: positions whose next token is a response token."""
    old_logps: torch.Tensor
    """[rows, seq] float32: log pi_old(next token), from the training forward pass before any update."""
    advantages: torch.Tensor
    """[rows, seq] float32, 0 outside action_mask."""
    scores: torch.Tensor
    """[rows] float32: the reward model's or reward function's score of each response."""
    ref_logps: Optional[torch.Tensor] = None
    """[rows, seq] float32: log pi_ref(next token); None when no KL is taken."""
    values: Optional[torch.Tensor] = None
    """[rows, seq] float32: the critic's values at rollout time (PPO)."""
    returns: Optional[torch.Tensor] = None
    """[rows, seq] float32: the critic's targets, advantages + values before whitening (PPO)."""
    metrics: Dict[str, float] = field(default_factory=dict)
    """The rollout's own metrics (mean reward, KL, response length, seconds ...), logged with its first step."""

    @property
    def rows(self) -> int:
        return self.tokens.shape[0]

    def select(self, rows: torch.Tensor) -> Dict[str, torch.Tensor]:
        """The per-row arrays of `rows` (indices), by field name."""
        return {
            f.name: getattr(self, f.name)[rows]
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }


def rollout_path(run_dir: str, index: int) -> str:
    return os.path.join(run_dir, ROLLOUT_DIR, f"rollout_{index:07d}.pt")


def save_rollout(path: str, rollout: Rollout) -> None:
    """Writes the batch atomically (a crash leaves the previous file or none, never a torn one)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    buffer = io.BytesIO()
    state = {f.name: getattr(rollout, f.name) for f in fields(rollout)}
    torch.save({"format": _FORMAT, **state}, buffer)
    write_bytes(path, buffer.getvalue())


def load_rollout(path: str, index: int) -> Rollout:
    """The batch save_rollout wrote for rollout `index`; a missing, foreign or other-numbered file is refused."""
    if not os.path.exists(path):
        raise MegatronSotaError(
            f"{path}: a run resumed inside rollout batch {index} needs the rows that batch generated, found no file "
            "(resume in the run directory that started it, or resume from a checkpoint at a rollout boundary)"
        )
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which
        raise MegatronSotaError(f"{path}: not a rollout file written by this project ({err})") from None
    if not isinstance(stored, dict) or stored.get("format") != _FORMAT or stored.get("index") != index:
        found = (stored.get("format"), stored.get("index")) if isinstance(stored, dict) else type(stored).__name__
        raise MegatronSotaError(f"{path}: expected rollout {index} of format {_FORMAT}, found (format, index) {found}")
    return Rollout(**{f.name: stored[f.name] for f in fields(Rollout)})


@dataclass(frozen=True)
class RolloutSchedule:
    """Which rollout row each training sample is: `epochs` passes over each batch of `rows`, `global_batch` rows
    per optimizer step, the rows reshuffled every pass (seeded by the batch and pass, so a resume repeats them)."""

    rows: int
    global_batch: int
    epochs: int
    seed: int

    def __post_init__(self):
        if self.rows % self.global_batch:
            raise MegatronSotaError(
                f"a rollout batch of {self.rows} rows (posttrain.rollout_prompts x posttrain.samples_per_prompt) "
                f"does not divide into optimizer steps of train.global_batch_size={self.global_batch}: make the "
                "rows a multiple of the batch size"
            )

    @property
    def steps_per_rollout(self) -> int:
        return self.epochs * self.rows // self.global_batch

    def rollout_of_step(self, step: int) -> int:
        """The rollout batch step `step` (1-based) trains on."""
        return (step - 1) // self.steps_per_rollout

    def row(self, sample: int) -> tuple[int, int]:
        """(rollout batch, row) of global sample `sample` (data/blend.py's order: sample j of step b is
        b x global_batch + j)."""
        step, position = divmod(sample, self.global_batch)
        rollout, local_step = divmod(step, self.steps_per_rollout)
        offset = local_step * self.global_batch + position
        epoch, within = divmod(offset, self.rows)
        return rollout, _order(self.rows, self.seed, rollout, epoch)[within]


@functools.lru_cache(maxsize=8)
def _order(rows: int, seed: int, rollout: int, epoch: int) -> List[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + rollout * 1009 + epoch)
    return torch.randperm(rows, generator=generator).tolist()


class SampleIndices(torch.utils.data.Dataset):
    """The training split of a PPO/GRPO run: sample i is just {"sample": i}; the forward step finds its row in
    the current rollout batch (RolloutSchedule.row), which exists only once the step's rollout has run."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return {"sample": torch.tensor(index, dtype=torch.long)}
