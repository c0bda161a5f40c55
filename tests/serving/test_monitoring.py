"""Monitoring: promtool accepts the alert rules and the server's /metrics text, the rules' own unit tests pass, and
the rules read the names and buckets ServerMetrics exports (p50/p99, error rate, tokens/s computed by promtool).

promtool is Debian's `prometheus` package; without it these tests skip, unless MEGATRON_SOTA_REQUIRE_PROMTOOL=1 (CI).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from megatron_sota.serving.metrics import MONITORING_DIR, ServerMetrics

RULES = MONITORING_DIR / "alert_rules.yml"
RULES_TEST = MONITORING_DIR / "alert_rules_test.yml"


def run(command: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, input=stdin, capture_output=True, timeout=60)


def test_promtool_accepts_the_alert_rules(promtool):
    result = run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_the_alert_rules_pass_their_promtool_unit_tests(promtool):
    result = run([promtool, "test", "rules", str(RULES_TEST)])
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


# Each mutation breaks one of the spec's choices; the unit tests in alert_rules_test.yml must notice every one.
MUTATIONS = {
    "p99 threshold 2.5 s": ("p99_rate5m > 2\n", "p99_rate5m > 2.5\n"),
    "p99 threshold >=": ("p99_rate5m > 2\n", "p99_rate5m >= 1.99\n"),
    "p50 alerted instead of p99": ("expr: job_route:megatron_sota_request_duration_seconds:p99_rate5m > 2", "expr: job_route:megatron_sota_request_duration_seconds:p50_rate5m > 2"),
    "error threshold 0.05": ("ratio_rate5m > 0.01\n", "ratio_rate5m > 0.05\n"),
    "error threshold 0.001": ("ratio_rate5m > 0.01\n", "ratio_rate5m > 0.001\n"),
    "429s counted as errors": ('code=~"5.."', 'code=~"5..|429"'),
    "no for: clause": ("for: 5m", "for: 0m"),
    "gateway error threshold 0.05": ("upstream_errors:ratio_rate5m > 0.01", "upstream_errors:ratio_rate5m > 0.05"),
    "gateway error threshold >=": ("upstream_errors:ratio_rate5m > 0.01", "upstream_errors:ratio_rate5m >= 0.01"),
    "gateway rate limits counted as errors": ('decision="upstream_error"', 'decision=~"upstream_error|rate_limited"'),
    "gateway p99 threshold 4 s": ("gateway_request_duration_seconds:p99_rate5m > 2", "gateway_request_duration_seconds:p99_rate5m > 4"),
    "latency quantile 0.95": ("histogram_quantile(0.99, sum by (job, route, le)", "histogram_quantile(0.95, sum by (job, route, le)"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_the_rules_unit_tests_fail_when_a_threshold_is_broken(promtool, tmp_path, name):
    old, new = MUTATIONS[name]
    text = RULES.read_text()
    assert old in text, f"mutation {name!r} no longer applies to {RULES}"
    (tmp_path / "alert_rules.yml").write_text(text.replace(old, new))
    shutil.copy(RULES_TEST, tmp_path / "alert_rules_test.yml")
    assert run([promtool, "check", "rules", str(tmp_path / "alert_rules.yml")]).returncode == 0, "the mutant must be valid rules"
    result = run([promtool, "test", "rules", str(tmp_path / "alert_rules_test.yml")])
    assert result.returncode != 0, f"alert_rules_test.yml passes with the mutation {name!r}"


def observed_metrics() -> ServerMetrics:
    """100 completions (60 in 0.3 s, 36 in 1.1 s, 4 in 2.2 s with 2 of them 500s) and their tokens, TTFTs, batches."""
    metrics = ServerMetrics()
    for i in range(100):
        seconds = 0.3 if i < 60 else 1.1 if i < 96 else 2.2
        metrics.request_finished("/v1/completions", 500 if i >= 98 else 200, seconds, prompt_tokens=5, completion_tokens=12)
        metrics.first_token(0.04 if i < 50 else 0.15)
    metrics.request_finished("/health", 200, 0.001)
    metrics.request_finished("/v1/completions", 429, 0.002)
    for rows in (1, 4, 8):
        metrics.batch(rows)
    metrics.queue_depth(3)
    metrics.running(8)
    return metrics


def test_promtool_check_metrics_accepts_the_server_exposition_without_lint_problems(promtool):
    text, content_type = observed_metrics().render()
    assert content_type.startswith("text/plain; version=0.0.4")
    result = run([promtool, "check", "metrics"], stdin=text)
    report = result.stdout.decode() + result.stderr.decode()
    assert result.returncode == 0 and report.strip() == "", report
    names = {family.name for family in text_string_to_metric_families(text.decode())}
    assert names >= {
        "megatron_sota_request_duration_seconds", "megatron_sota_time_to_first_token_seconds", "megatron_sota_requests",
        "megatron_sota_prompt_tokens", "megatron_sota_generation_tokens", "megatron_sota_queue_depth",
        "megatron_sota_running_requests", "megatron_sota_batch_size", "megatron_sota_memory_bytes",
    }


def test_render_reads_memory_at_scrape_time():
    samples = {
        s.labels["kind"]: s.value
        for family in text_string_to_metric_families(ServerMetrics().render()[0].decode())
        if family.name == "megatron_sota_memory_bytes"
        for s in family.samples
    }
    assert samples["rss"] > 10 * 2**20  # this Python process with torch imported holds far more than 10 MiB


def as_input_series(exposition: str) -> list[dict]:
    """Every counter and bucket sample of a scrape as a promtool series growing by that value each minute."""
    series = []
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_total")):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted({**sample.labels, "job": "server"}.items()))
                series.append({"series": f"{sample.name}{{{labels}}}", "values": f"0+{sample.value:g}x15"})
    return series


def value_test(expr: str, labels: str, value: float) -> dict:
    return {"expr": expr, "eval_time": "10m", "exp_samples": [{"labels": labels, "value": value}]}


def test_the_rules_compute_the_expected_percentiles_rates_and_alerts_from_the_server_metrics(promtool, tmp_path):
    """promtool's PromQL over ServerMetrics' own exposition, scraped once a minute with the same traffic each minute."""
    exposition = observed_metrics().render()[0].decode()
    completions = '{job="server",route="/v1/completions"}'
    test = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": as_input_series(exposition),
            "promql_expr_test": [
                # p50: rank 50.5 of 101 completions (the 429 is one, under 0.05 s) in (0.25, 0.5], which holds 60: 0.25 + 0.25 * 49.5 / 60
                value_test("round(1e6 * job_route:megatron_sota_request_duration_seconds:p50_rate5m{route=\"/v1/completions\"})",
                           completions, round(1e6 * (0.25 + 0.25 * 49.5 / 60))),
                # p99: rank 99.99 in (2, 2.5], where the last 4 of 101 lie (97 below): 2 + 0.5 * (99.99 - 97) / 4
                value_test("round(1e6 * job_route:megatron_sota_request_duration_seconds:p99_rate5m{route=\"/v1/completions\"})",
                           completions, round(1e6 * (2 + 0.5 * (99.99 - 97) / 4))),
                # TTFT p50: rank 50 of 100 ends the (0.025, 0.05] bucket
                value_test("round(1e6 * job:megatron_sota_time_to_first_token_seconds:p50_rate5m)", '{job="server"}', 50000),
                # 2 of 102 answers are 5xx (the 429 and /health are not errors, but are answers)
                value_test("round(1e6 * job:megatron_sota_request_errors:ratio_rate5m)", '{job="server"}', round(1e6 * 2 / 102)),
                # 1200 generated tokens a minute
                value_test("job:megatron_sota_generation_tokens:rate5m", 'job:megatron_sota_generation_tokens:rate5m{job="server"}', 20),
            ],
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": "MegatronSotaP99LatencyHigh", "exp_alerts": [{
                    "exp_labels": {"severity": "page", "job": "server", "route": "/v1/completions"},
                    "exp_annotations": {
                        "summary": "p99 latency of /v1/completions above 2000 ms",
                        "description": "server /v1/completions: p99 over 5m is 2.374s (threshold 2s) for 5 minutes.",
                    },
                }]},
                {"eval_time": "10m", "alertname": "MegatronSotaErrorRateHigh", "exp_alerts": [{
                    "exp_labels": {"severity": "page", "job": "server"},
                    "exp_annotations": {
                        "summary": "5xx error rate above 1%",
                        "description": "server: 1.961% of requests answered 5xx over 5m (threshold 1%, 429s not counted) for 5 minutes.",
                    },
                }]},
            ],
        }],
    }
    path = Path(tmp_path, "server_metrics_test.yml")
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = run([promtool, "test", "rules", str(path)])
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
