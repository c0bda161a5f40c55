"""Where a PPO/GRPO iteration's time goes, from a run's metrics.jsonl: generating, the rest of the rollout (scoring
with the actor, critic, reference and reward), and the training steps on that rollout batch.

It reads metrics rows only; it must not run anything.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import Dict, List, Sequence

from megatron_sota.errors import MegatronSotaError


@dataclass(frozen=True)
class IterationTime:
    first_step: int
    steps: int
    generation_s: float
    scoring_s: float
    """The rollout's other work: the actor's, critic's, reference's and reward's passes over the rows."""
    training_s: float
    """The updates on this rollout batch (every step's time less the rollout's)."""

    @property
    def total_s(self) -> float:
        return self.generation_s + self.scoring_s + self.training_s

    @property
    def generation_share(self) -> float:
        return self.generation_s / self.total_s


def iteration_times(rows: Sequence[Dict], where: str = "metrics.jsonl") -> List[IterationTime]:
    """One IterationTime per rollout batch whose steps are all in `rows` (a row per step: logging.interval=1,
    which conf/posttrain/ppo.yaml and grpo.yaml set). The last iteration counts only if a later one began or
    the rows end with it complete (its step count equal to the first's)."""
    steps = {int(row["step"]): row for row in rows if "step_time_s" in row}
    starts = sorted(step for step, row in steps.items() if "rollout_seconds" in row)
    if not starts:
        raise MegatronSotaError(f"{where}: no row carries rollout_seconds: not a PPO/GRPO run's metrics")
    gaps = [s for s in range(starts[0], max(steps) + 1) if s not in steps]
    if gaps:
        raise MegatronSotaError(
            f"{where}: steps {gaps[:5]}{' ...' if len(gaps) > 5 else ''} have no row; run with logging.interval=1 "
            "to time every iteration"
        )
    bounds = starts + [max(steps) + 1]
    length = bounds[1] - bounds[0] if len(bounds) > 2 else None
    times = []
    for begin, end in zip(bounds, bounds[1:]):
        if length is not None and end - begin != length:
            continue  # an iteration the rows end inside
        first = steps[begin]
        total = sum(steps[s]["step_time_s"] for s in range(begin, end))
        generation = first["generation_seconds"]
        times.append(IterationTime(begin, end - begin, generation, first["rollout_seconds"] - generation,
                                   total - first["rollout_seconds"]))
    return times


def read_metrics(path: str) -> List[Dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def timing_table(times: Sequence[IterationTime]) -> str:
    lines = [f"{'iteration':>9}  {'steps':>5}  {'generation s':>12}  {'scoring s':>9}  {'training s':>10}  {'generation share':>16}"]
    for k, t in enumerate(times):
        lines.append(f"{k:>9}  {t.steps:>5}  {t.generation_s:>12.2f}  {t.scoring_s:>9.2f}  {t.training_s:>10.2f}  "
                     f"{100 * t.generation_share:>15.1f}%")
    shares = [t.generation_share for t in times]
    lines.append(f"median generation share over {len(times)} iterations: {100 * statistics.median(shares):.1f}%"
                 + (" (the first iteration includes warm-up)" if len(times) > 1 else ""))
    return "\n".join(lines)
