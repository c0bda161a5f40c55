"""A passkey task's accuracy by length and depth: its metric rows, the grid read back from them, a text table, a heat map.

The rows are the only carrier (the JSON report, metrics.jsonl, TensorBoard all take rows), so the grid is looked
up from them by the names `cell_metric` gives; nothing here runs a model.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from megatron_sota.atomic_files import write_bytes
from megatron_sota.evaluation.metrics import mean_stderr
from megatron_sota.evaluation.passkey import PasskeySample
from megatron_sota.evaluation.report import MetricRow
from megatron_sota.evaluation.task_spec import TaskSpec


def cell_metric(length: int, depth: float) -> str:
    """The metric name of one cell, e.g. "exact_match/len256/depth0.5" (a valid TensorBoard tag)."""
    return f"exact_match/len{length}/depth{float(depth)!r}"


def is_cell_metric(metric: str) -> bool:
    """True for a cell's row (the overall exact_match row is not one)."""
    return metric.startswith("exact_match/len")


def passkey_rows(task: str, samples: Sequence[PasskeySample], correct: Sequence[float]) -> list[MetricRow]:
    """exact_match over every sample, then one row per (length, depth) cell in the samples' order."""
    if len(samples) != len(correct) or not samples:
        raise ValueError(f"{len(samples)} passkey samples but {len(correct)} outcomes")
    cells: dict[tuple[int, float], list[float]] = {}
    for sample, value in zip(samples, correct):
        cells.setdefault((sample.length, sample.depth), []).append(float(value))
    rows = [MetricRow(task, "exact_match", *mean_stderr([float(v) for v in correct]), len(correct))]
    rows.extend(MetricRow(task, cell_metric(length, depth), *mean_stderr(values), len(values)) for (length, depth), values in cells.items())
    return rows


@dataclass(frozen=True)
class PasskeyGrid:
    task: str
    lengths: tuple[int, ...]
    depths: tuple[float, ...]
    accuracy: tuple[tuple[float | None, ...], ...]
    """[length][depth]; None where no row was reported."""
    samples: tuple[tuple[int, ...], ...]

    def as_json(self) -> dict:
        return {"metric": "exact_match", "lengths": list(self.lengths), "depths": list(self.depths),
                "accuracy": [list(r) for r in self.accuracy], "samples": [list(r) for r in self.samples]}


def passkey_grid(spec: TaskSpec, rows: Sequence[MetricRow]) -> PasskeyGrid:
    """The task's cells, looked up in `rows` by their metric names."""
    found = {row.metric: row for row in rows if row.task == spec.name}
    cells = [[found.get(cell_metric(length, depth)) for depth in spec.depths] for length in spec.lengths]
    return PasskeyGrid(
        spec.name, tuple(spec.lengths), tuple(spec.depths),
        tuple(tuple(None if c is None else c.value for c in line) for line in cells),
        tuple(tuple(0 if c is None else c.n for c in line) for line in cells),
    )


def format_grid(grid: PasskeyGrid) -> str:
    """Rows: lengths in tokens; columns: depths; cells: accuracy ("-" where missing)."""
    header = ["length \\ depth", *(f"{d:g}" for d in grid.depths)]
    body = [[str(length), *("-" if a is None else f"{a:.2f}" for a in line)] for length, line in zip(grid.lengths, grid.accuracy)]
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in [header, *body]]
    n = sorted({s for line in grid.samples for s in line})
    title = f"{grid.task}: exact_match by length (tokens) and needle depth, {'/'.join(map(str, n))} samples per cell"
    return "\n".join([title, *lines])


def heatmap_figure(grid: PasskeyGrid):
    """A matplotlib Figure (no pyplot state): one square per (length, depth), coloured and labelled by accuracy."""
    import numpy
    from matplotlib.figure import Figure

    values = numpy.array([[numpy.nan if a is None else a for a in line] for line in grid.accuracy], dtype=float)
    figure = Figure(figsize=(1.2 + 0.9 * len(grid.depths), 1.2 + 0.6 * len(grid.lengths)), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(grid.depths)), [f"{d:g}" for d in grid.depths])
    axes.set_yticks(range(len(grid.lengths)), [str(length) for length in grid.lengths])
    axes.set_xlabel("needle depth (fraction of the filler)")
    axes.set_ylabel("context length (tokens)")
    axes.set_title(f"{grid.task}: pass-key accuracy")
    for i, line in enumerate(grid.accuracy):
        for j, a in enumerate(line):
            # dark text on the bright (high) end of viridis, light text on the dark end
            axes.text(j, i, "-" if a is None else f"{a:.2f}", ha="center", va="center", color="black" if a is not None and a > 0.6 else "white")
    figure.colorbar(image, ax=axes, label="exact match")
    return figure


def write_heatmap(path: str, grid: PasskeyGrid) -> None:
    """The heat map as a PNG at `path`, written whole or not at all."""
    buffer = io.BytesIO()
    heatmap_figure(grid).savefig(buffer, format="png", dpi=100)
    write_bytes(path, buffer.getvalue())
