"""The results of an evaluation: a table for people, a JSON file for CI, and the threshold verdict.

The JSON is written whole or not at all (megatron_sota.atomic_files), so a CI job that reads it after
a crash finds the previous report or none, never a truncated one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from megatron_sota.atomic_files import write_json
from megatron_sota.evaluation.task_spec import TaskSpec, threshold_bounds

RESERVED_KEYS = ("results", "failures", "passed")
BELOW_THRESHOLD_EXIT_CODE = 3
"""tools/evaluate.py's exit code, and a training run's stopped by its in-loop gate (eval.stop_on_threshold), when a
task breaches a threshold."""


@dataclass(frozen=True)
class MetricRow:
    task: str
    metric: str
    value: float
    stderr: float | None
    n: int
    """Items (or documents) the value is computed over."""


def check_thresholds(rows: Sequence[MetricRow], specs: Mapping[str, TaskSpec]) -> list[str]:
    """One message per violated bound of `specs`' thresholds (task_spec.threshold_bounds: a minimum, a maximum, or both).

    A threshold whose metric the task did not report fails too: a gate that cannot be checked must not pass.
    A NaN value fails every bound.
    """
    values = {(row.task, row.metric): row.value for row in rows}
    failures = []
    for name, spec in specs.items():
        for metric, bound in spec.thresholds.items():
            if (name, metric) not in values:
                reported = sorted(m for t, m in values if t == name)
                failures.append(
                    f"task {name}: has a threshold on {metric} but reported no {metric} "
                    f"(reported: {', '.join(reported) if reported else 'nothing'})"
                )
                continue
            value = values[(name, metric)]
            low, high = threshold_bounds(metric, bound)
            if low is not None and not value >= low:
                failures.append(f"task {name}: {metric} = {value:.4f} is below its threshold {low:.4f}")
            if high is not None and not value <= high:
                failures.append(f"task {name}: {metric} = {value:.4f} is above its threshold {high:.4f}")
    return failures


def format_table(rows: Sequence[MetricRow]) -> str:
    """An aligned text table: task, metric, value, ± stderr, n (text columns left, numbers right)."""
    header = ("task", "metric", "value", "± stderr", "n")
    body = [
        (row.task, row.metric, f"{row.value:.4f}", "" if row.stderr is None else f"± {row.stderr:.4f}", str(row.n))
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(cells) for cells in body)])


def write_report(path: str, rows: Sequence[MetricRow], failures: Sequence[str], meta: Mapping[str, Any]) -> None:
    """JSON {"results": [...], "failures": [...], "passed": bool, **meta}, replaced atomically.

    Non-finite values (an overflowing perplexity) are written as null, since JSON has no NaN/Infinity.
    """
    clash = sorted(set(meta) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f"report meta may not use the keys {', '.join(clash)}")
    report = {
        "results": [{k: _finite(v) for k, v in asdict(row).items()} for row in rows],
        "failures": list(failures),
        "passed": not failures,
        **meta,
    }
    write_json(path, report, indent=2, ensure_ascii=False, allow_nan=False)


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value
