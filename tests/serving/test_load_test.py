"""tools/serving_benchmark.py: its numbers are what an OpenAI-shaped server with known timing did, its percentile is
numpy's linear one, errors are counted by status, and several concurrency levels run one after another."""

from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest

from megatron_sota.cli.serving_benchmark import read_prompts
from megatron_sota.errors import MegatronSotaError
from megatron_sota.serving.load_test import percentile
from tests.serving.load_test_app import LoadTestApp, serving
from tests.tool_runner import run_tool


def test_percentile_is_numpys_linear_percentile():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 7, 20, 101):
        values = list(rng.exponential(size=n))
        for q in (0, 1, 25, 50, 90, 99, 99.9, 100):
            assert percentile(values, q) == pytest.approx(np.percentile(values, q, method="linear"), rel=1e-12, abs=0), (n, q)
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5  # between ranks, not nearest-rank's 2.0
    assert math.isnan(percentile([], 50))


def test_streamed_load_test_reports_the_servers_tokens_errors_and_concurrency(tmp_path, capsys):
    fake = LoadTestApp(token_seconds=0.01, refuse_every=5)
    report_path = tmp_path / "report.json"
    with serving(fake.app) as url:
        code, out, err = run_tool("serving_benchmark", [
            "--url", url, "--requests", "20", "--concurrency", "4", "--max-tokens", "5", "--stream",
            "--prompt", "a", "--prompt", "b", "--report", str(report_path),
        ], capsys)
    assert code == 0, err
    (run,) = json.loads(report_path.read_text())["runs"]
    assert fake.arrived == 20 and fake.max_in_flight == 4
    assert run["model"] == "load-test-model"  # asked of GET /v1/models
    assert (run["succeeded"], run["error_count"], run["errors_by_status"]) == (16, 4, {"429": 4})
    assert "rate limited" in run["error_examples"]["429"]
    assert run["completion_tokens"] == 16 * 5 and run["requests_without_usage"] == 0
    assert run["tokens_per_second"] == pytest.approx(80 / run["wall_seconds"])
    assert run["requests_per_second"] == pytest.approx(16 / run["wall_seconds"])
    ok = [r for r in run["per_request"] if r["status"] == 200]
    assert run["latency_p50_s"] == pytest.approx(np.percentile([r["seconds"] for r in ok], 50))
    assert run["latency_p99_s"] == pytest.approx(np.percentile([r["seconds"] for r in ok], 99))
    assert run["ttft_p50_s"] == pytest.approx(np.percentile([r["first_token_seconds"] for r in ok], 50))
    # five tokens, each after a 10 ms sleep: the first arrives after at least one sleep, the last four sleeps later
    assert all(r["first_token_seconds"] >= 0.009 and r["seconds"] - r["first_token_seconds"] >= 0.035 for r in ok)
    assert "tokens/s" in out and "{'429': 4}" in out and "linear interpolation" in out


def test_one_at_a_time_and_batched_runs_follow_each_other_and_chat_counts_usage(tmp_path, capsys):
    fake = LoadTestApp(token_seconds=0.02)
    report_path = tmp_path / "report.json"
    with serving(fake.app) as url:
        code, _, err = run_tool("serving_benchmark", [
            "--url", url + "/v1", "--model", "m", "--requests", "8", "--concurrency", "1", "4", "--max-tokens", "4",
            "--chat", "--report", str(report_path),
        ], capsys)
    assert code == 0, err
    one, four = json.loads(report_path.read_text())["runs"]
    assert (one["concurrency"], four["concurrency"]) == (1, 4) and fake.max_in_flight == 4
    assert one["completion_tokens"] == four["completion_tokens"] == 8 * 4
    assert one["ttft_p50_s"] is None and one["error_count"] == 0
    # requests that only wait overlap: four at once take about a quarter of the wall time of one at a time
    assert four["wall_seconds"] < 0.6 * one["wall_seconds"]


def test_a_server_that_does_not_answer_is_counted_and_fails_the_command(tmp_path, capsys):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        code, out, _ = run_tool("serving_benchmark", [
            "--url", f"http://127.0.0.1:{port}", "--model", "m", "--requests", "3", "--concurrency", "2",
            "--report", str(tmp_path / "report.json"),
        ], capsys)
    assert code == 2
    assert "{'no_response': 3}" in out
    (run,) = json.loads((tmp_path / "report.json").read_text(), parse_constant=pytest.fail)["runs"]  # strict JSON: no NaN
    assert run["latency_p50_s"] is None and run["error_examples"]["no_response"].startswith("ConnectError")


def test_prompt_file_problems_are_listed_together(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "ok"}\nnot json\n{"text": "x"}\n')
    with pytest.raises(MegatronSotaError) as err:
        read_prompts(str(path))
    assert f"{path}:2:" in str(err.value) and f"{path}:3:" in str(err.value)
    path.write_text('{"prompt": "one"}\n\n{"prompt": "two"}\n')
    assert read_prompts(str(path)) == ["one", "two"]
