"""tools/rl_timing.py: an iteration's generation, scoring and training seconds from the rows of its steps."""

from __future__ import annotations

import json

import pytest

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.rl_timing import iteration_times
from tests.tool_runner import run_tool


def _rows(iterations: int, steps: int, last_steps: int = None) -> list:
    rows = []
    for k in range(iterations):
        count = steps if k < iterations - 1 or last_steps is None else last_steps
        for j in range(count):
            row = {"step": len(rows) + 1, "step_time_s": 1.0 + k}
            if j == 0:
                row.update(step_time_s=10.0 + k, rollout_seconds=8.0, generation_seconds=6.0)
            rows.append(row)
    return rows


def test_each_iteration_is_split_into_generation_scoring_and_training():
    times = iteration_times(_rows(3, 4))
    assert [t.first_step for t in times] == [1, 5, 9]
    second = times[1]
    # 8 s of rollout (6 generating) inside a first step of 11 s, then 3 steps of 2 s.
    assert (second.generation_s, second.scoring_s, second.training_s) == (6.0, 2.0, 3.0 + 6.0)
    assert second.generation_share == pytest.approx(6.0 / 17.0)
    # An iteration the rows end inside is left out.
    assert len(iteration_times(_rows(3, 4, last_steps=2))) == 2


def test_missing_rows_and_foreign_metrics_are_refused(tmp_path, capsys):
    rows = [row for row in _rows(2, 4) if row["step"] != 3]
    with pytest.raises(MegatronSotaError, match=r"steps \[3\] have no row; run with logging.interval=1"):
        iteration_times(rows)
    with pytest.raises(MegatronSotaError, match="no row carries rollout_seconds"):
        iteration_times([{"step": 1, "step_time_s": 1.0}])
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(2, 2)))
    code, out, _ = run_tool("rl_timing", [str(tmp_path)], capsys)
    assert code == 0 and "median generation share over 2 iterations" in out
    code, _, err = run_tool("rl_timing", [str(tmp_path / "nothing")], capsys)
    assert code == 1 and "nothing: no such file (expected a run directory holding metrics.jsonl)" in err
