"""The release gate's verdict and its three reports: release_gate.json (for CI), release_gate.md (a table for people) and
release_gate.png (each gated metric across the run's iterations, its threshold drawn); nothing here runs a model.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from megatron_sota.atomic_files import write_bytes, write_text
from megatron_sota.evaluation.gate_cache import IterationResult
from megatron_sota.evaluation.gate_file import ReleaseGate
from megatron_sota.evaluation.passkey_report import is_cell_metric
from megatron_sota.evaluation.report import MetricRow, check_thresholds, write_report
from megatron_sota.evaluation.task_spec import TaskSpec, threshold_bounds

JSON_NAME, MARKDOWN_NAME, PLOT_NAME = "release_gate.json", "release_gate.md", "release_gate.png"


@dataclass(frozen=True)
class Check:
    """One threshold of the gate against the judged checkpoint's rows."""

    task: str
    metric: str
    value: float | None
    """None when the task did not report the metric (which fails)."""
    stderr: float | None
    min: float | None
    max: float | None
    failure: str | None
    """evaluation.report.check_thresholds' message, None when the check passed."""

    @property
    def passed(self) -> bool:
        return self.failure is None


def gate_checks(rows: Sequence[MetricRow], specs: Mapping[str, TaskSpec]) -> list[Check]:
    """Every threshold of `specs`, judged one at a time by check_thresholds (tools/evaluate.py's own verdict)."""
    found = {(row.task, row.metric): row for row in rows}
    checks = []
    for name, spec in specs.items():
        for metric, bound in spec.thresholds.items():
            low, high = threshold_bounds(metric, bound)
            failures = check_thresholds(rows, {name: dataclasses.replace(spec, thresholds={metric: bound})})
            row = found.get((name, metric))
            checks.append(Check(name, metric, row and row.value, row and row.stderr, low, high, "; ".join(failures) or None))
    return checks


def bound_text(low: float | None, high: float | None) -> str:
    return ", ".join(text for text in (low is not None and f">= {low:g}", high is not None and f"<= {high:g}") if text)


def markdown(gate: ReleaseGate, judged: IterationResult, checks: Sequence[Check]) -> str:
    """A title, the verdict, a table of every row (task, metric, value ± stderr, threshold, verdict) and the failures."""
    failed = [c for c in checks if not c.passed]
    verdict = f"**FAILED**: {len(failed)} of {len(checks)} checks" if failed else f"**passed**: {len(checks)} checks"
    lines = [
        f"# Release gate: {gate.description or os.path.basename(gate.path)}",
        "",
        f"Checkpoint `{judged.checkpoint}` (iteration {judged.iteration}), gate `{gate.path}`: {verdict}.",
        f"Safety task: {gate.safety}.",
        "",
        "| task | metric | value ± stderr | threshold | verdict |",
        "|---|---|---|---|---|",
    ]
    by_metric = {(c.task, c.metric): c for c in checks}
    for row in (r for r in judged.rows if not is_cell_metric(r.metric)):
        check = by_metric.pop((row.task, row.metric), None)
        value = f"{row.value:.4f}" + ("" if row.stderr is None else f" ± {row.stderr:.4f}")
        lines.append(f"| {row.task} | {row.metric} | {value} | {_threshold_cell(check)} | {_verdict(check)} |")
    for check in by_metric.values():  # thresholds on metrics the task did not report
        lines.append(f"| {check.task} | {check.metric} | not reported | {_threshold_cell(check)} | {_verdict(check)} |")
    if failed:
        lines += ["", "## Failures", "", *(f"- {c.failure}" for c in failed)]
    return "\n".join(lines) + "\n"


def _threshold_cell(check: Check | None) -> str:
    return "" if check is None else bound_text(check.min, check.max)


def _verdict(check: Check | None) -> str:
    return "" if check is None else "pass" if check.passed else "**FAIL**"


def history_figure(history: Sequence[IterationResult], checks: Sequence[Check]):
    """A matplotlib Figure (no pyplot state): one panel per gated metric, its value ± stderr at each iteration, its bounds dashed."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    columns = min(3, len(checks)) or 1
    rows_count = -(-len(checks) // columns) or 1
    figure = Figure(figsize=(4.2 * columns, 3.0 * rows_count), layout="constrained")
    for index, check in enumerate(checks):
        axes = figure.add_subplot(rows_count, columns, index + 1)
        points = [(r.iteration or 0, row) for r in history for row in r.rows if (row.task, row.metric) == (check.task, check.metric)]
        axes.errorbar(
            [x for x, _ in points], [row.value for _, row in points], yerr=[row.stderr or 0.0 for _, row in points],
            marker="o", capsize=3, label=check.metric,
        )
        for bound, name in ((check.min, "min"), (check.max, "max")):
            if bound is not None:
                axes.axhline(bound, color="tab:red", linestyle="--", label=f"threshold ({name} {bound:g})")
        axes.set_title(f"{check.task}: {check.metric}", fontsize=9)
        axes.set_xlabel("iteration")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend(fontsize=7)
    return figure


def write_gate_reports(
    output_dir: str, gate: ReleaseGate, judged: IterationResult, history: Sequence[IterationResult], meta: Mapping
) -> list[Check]:
    """Writes the three files (each whole or not at all) and returns the judged checkpoint's checks."""
    checks = gate_checks(judged.rows, gate.specs)
    failures = [c.failure for c in checks if not c.passed]
    buffer = io.BytesIO()
    history_figure(history, checks).savefig(buffer, format="png", dpi=100)
    write_bytes(os.path.join(output_dir, PLOT_NAME), buffer.getvalue())
    write_text(os.path.join(output_dir, MARKDOWN_NAME), markdown(gate, judged, checks))
    report = {
        **meta,
        "gate": os.path.abspath(gate.path),
        "description": gate.description,
        "safety": gate.safety,
        "checkpoint": judged.checkpoint,
        "iteration": judged.iteration,
        "cached": judged.cached,
        "tasks": {task.spec.name: _task_entry(task.spec, task.origin, judged.seconds) for task in gate.tasks},
        "checks": [{**dataclasses.asdict(c), "passed": c.passed} for c in checks],
        "history": [_history_entry(r, gate.specs) for r in history],
        "files": {"markdown": MARKDOWN_NAME, "plot": PLOT_NAME},
    }
    write_report(os.path.join(output_dir, JSON_NAME), judged.rows, failures, report)
    return checks


def _task_entry(spec: TaskSpec, origin: str, seconds: Mapping[str, float]) -> dict:
    return {"type": spec.type, "path": spec.path, "from": origin, "num_fewshot": spec.num_fewshot, "limit": spec.limit,
            "chat": spec.chat, "thresholds": spec.thresholds, "seconds": seconds.get(spec.name)}


def _history_entry(result: IterationResult, specs: Mapping[str, TaskSpec]) -> dict:
    failures = check_thresholds(result.rows, specs)
    return {"iteration": result.iteration, "checkpoint": result.checkpoint, "cached": result.cached, "passed": not failures,
            "failures": failures, "results": [dataclasses.asdict(row) for row in result.rows]}
