"""The passkey task on a trained checkpoint: the harness's accuracy equals a direct check of the greedy completions,
cells are grouped by length and depth, and tools/evaluate.py writes the grid, the JSON and the heat map (or refuses a
length beyond the model's positions, naming the task file and key)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from megatron_sota.evaluation.passkey_report import cell_metric
from megatron_sota.runtime.local_ranks import run_distributed
from tests.distributed.jobs import stdlib_job
from tests.inference.eval_probes import passkey_probe, write_passkey_task

TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "evaluate.py")
LENGTHS, DEPTHS = (96, 160), (0.0, 0.5, 1.0)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> str:
    return write_passkey_task(str(tmp_path_factory.mktemp("passkey")), "pk")


@pytest.fixture(scope="module")
def probe(checkpoint, task_file) -> dict:
    return run_distributed(passkey_probe, 1, checkpoint, task_file)[0]


def _cells(rows: list) -> dict:
    return {r["metric"]: r["value"] for r in rows}


def _answered(text: str, key: str) -> bool:
    """The completion, cut at the first newline or period, ends in the key (written here, not the harness's extractor)."""
    numbers = re.findall(r"(?<![\w.])-?\d+", re.split(r"[\n.]", text, maxsplit=1)[0])
    return bool(numbers) and int(numbers[-1]) == int(key)


@pytest.mark.slow
def test_passkey_accuracy_equals_a_direct_check_of_the_greedy_completions(probe):
    direct = probe["direct"]
    assert len(direct) == len(LENGTHS) * len(DEPTHS) * 2 and all(d["text"] for d in direct)  # it generated (whitespace, for this code model)
    expected = {"exact_match": sum(_answered(d["text"], d["key"]) for d in direct) / len(direct)}
    for length in LENGTHS:
        for depth in DEPTHS:
            cell = [_answered(d["text"], d["key"]) for d in direct if (d["length"], d["depth"]) == (length, depth)]
            expected[cell_metric(length, depth)] = sum(cell) / len(cell)
    assert _cells(probe["rows"]) == pytest.approx(expected)
    assert [r["n"] for r in probe["rows"]] == [len(direct)] + [2] * len(LENGTHS) * len(DEPTHS)


@pytest.mark.slow
def test_passkey_cells_follow_the_generated_answers(probe):
    # the copying generator answers right at the first length only: every cell there 1, every other 0
    expected = {cell_metric(n, d): float(n == LENGTHS[0]) for n in LENGTHS for d in DEPTHS}
    assert _cells(probe["retrieved"]) == {"exact_match": 0.5, **expected}


@pytest.mark.slow
def test_evaluate_tool_prints_the_grid_and_writes_report_and_heat_map(checkpoint, task_file, probe, tmp_path):
    report = tmp_path / "report.json"
    result = subprocess.run([sys.executable, TOOL, "--load", checkpoint, "--task", task_file, "--output", str(report), "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    grid_at = next(i for i, line in enumerate(lines) if line.startswith("pk: exact_match by length"))
    assert lines[grid_at + 1].split() == ["length", "\\", "depth", "0", "0.5", "1"]
    assert [line.split()[0] for line in lines[grid_at + 2 :]] == ["96", "160"]
    assert all(len(line.split()) == 1 + len(DEPTHS) for line in lines[grid_at + 2 :])
    written = json.loads(report.read_text())
    assert _cells(written["results"]) == pytest.approx(_cells(probe["rows"]))
    entry = written["tasks"]["pk"]
    assert entry["grid"]["lengths"] == list(LENGTHS) and entry["grid"]["depths"] == list(DEPTHS)
    assert [len(line) for line in entry["grid"]["accuracy"]] == [len(DEPTHS)] * len(LENGTHS)
    assert entry["heatmap"] == str(tmp_path / "report.pk.png") and (tmp_path / "report.pk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_evaluate_tool_refuses_a_length_beyond_max_position_embeddings(checkpoint, stdlib_shards, tmp_path):
    positions = stdlib_job(stdlib_shards).model.max_position_embeddings
    too_long = write_passkey_task(str(tmp_path), "long", lengths=f"96, {positions + 1}")
    result = subprocess.run([sys.executable, TOOL, "--load", checkpoint, "--task", too_long, "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert f"{too_long}: key 'lengths': expected lengths <= {positions - 6}" in result.stderr
    assert f"max_position_embeddings {positions} less max_new_tokens 6), found {positions + 1}" in result.stderr
