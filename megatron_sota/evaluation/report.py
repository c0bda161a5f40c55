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
from megatron_sota.evaluation.task_spec import LOWER_IS_BETTER, TaskSpec

RESERVED_KEYS = ("results", "failures", "passed")


@dataclass(frozen=True)
class MetricRow:
    task: str
    metric: str
    value: float
    stderr: float | None
    n: int
    """Items (or documents) the value is computed over."""


def check_thresholds(rows: Sequence[MetricRow], specs: Mapping[str, TaskSpec]) -> list[str]:
    """One message per violated threshold of `specs` (a minimum, or a maximum for LOWER_IS_BETTER metrics).

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
            if metric in LOWER_IS_BETTER:
                if not value <= bound:
                    failures.append(f"task {name}: {metric} = {value:.4f} is above its threshold {bound:.4f}")
            elif not value >= bound:
                failures.append(f"task {name}: {metric} = {value:.4f} is below its threshold {bound:.4f}")
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
