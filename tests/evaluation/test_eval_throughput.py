"""tools/eval_throughput.py: both backends serve the same requests of the same task, and the report says how many."""

from __future__ import annotations

import json

import pytest

from tests.evaluation.lm_eval_tasks import MC, OFFLINE, write_tasks
from tests.tool_runner import run_tool

LIMIT = 3
CHOICES = 4
"""Every item of examples/lm_eval/mc_sample.jsonl has four choices: one loglikelihood request each."""


@pytest.mark.slow
def test_both_backends_serve_the_same_requests(checkpoint, hf_export, tmp_path, capsys, monkeypatch):
    for key, value in OFFLINE.items():
        monkeypatch.setenv(key, value)
    include = write_tasks(str(tmp_path / "tasks"))
    report = str(tmp_path / "throughput.json")
    code, out, err = run_tool("eval_throughput", ["--load", checkpoint, "--hf", hf_export, "--tasks", MC, "--include-path", include,
                                                  "--limit", str(LIMIT), "--device", "cpu", "--report", report], capsys)
    assert code == 0, err
    with open(report, encoding="utf-8") as handle:
        r = json.load(handle)
    ours, hf = r["backends"]
    assert (ours["backend"], hf["backend"]) == ("megatron_sota", "hf")
    for row in (ours, hf):
        assert row["requests"] == {"loglikelihood": LIMIT * CHOICES, "loglikelihood_rolling": 0, "generate_until": 0}
        assert row["requests_per_s"] == pytest.approx(LIMIT * CHOICES / row["eval_s"], rel=0.01)
        assert 0 < row["model_s"] <= row["eval_s"]
    assert ours["metrics"] == hf["metrics"]  # the same model answers the same
    assert r["speedup"] == pytest.approx(ours["requests_per_s"] / hf["requests_per_s"], rel=0.01)
    assert out.count("megatron_sota ") >= 1 and "req/s" in out
