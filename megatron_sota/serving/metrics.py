"""The model server's Prometheus metrics: latency, time to first token, tokens, responses by code, queue, batches, memory.

It records what the server reports and reads memory at scrape time; it must not time requests itself or touch the
process-wide default registry (each ServerMetrics owns one, so two servers or tests in one process never collide).
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import torch
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "megatron_sota_"
# alert_rules.yml (recording rules and alerts over these names) and alert_rules_test.yml, shipped as package data.
MONITORING_DIR = Path(__file__).resolve().parent / "monitoring"

# Edges around the spec's 2 s threshold: 2.0 is an edge, so "p99 > 2 s" read from the buckets is exact (it holds
# exactly when more than 1% of requests took longer than 2 s, whatever the interpolation inside a bucket).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 5.0, 10.0, 30.0, 60.0)
FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class ServerMetrics:
    """Counters, gauges and histograms of one model server, in a registry of their own (`registry`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self._duration = Histogram(
            PREFIX + "request_duration_seconds", "Seconds from a request's arrival to its last byte, by route",
            ["route"], buckets=LATENCY_BUCKETS, registry=reg,
        )
        self._first_token = Histogram(
            PREFIX + "time_to_first_token_seconds", "Seconds from a generation request's arrival to its first token",
            buckets=FIRST_TOKEN_BUCKETS, registry=reg,
        )
        # prometheus_client appends _total to counters: these are exposed as megatron_sota_requests_total etc.
        self._requests = Counter(PREFIX + "requests", "Answered requests by route and HTTP status code", ["route", "code"], registry=reg)
        self._prompt_tokens = Counter(PREFIX + "prompt_tokens", "Prompt tokens of finished requests", registry=reg)
        self._generation_tokens = Counter(PREFIX + "generation_tokens", "Generated tokens of finished requests", registry=reg)
        self._queue = Gauge(PREFIX + "queue_depth", "Requests waiting for a generation batch", registry=reg)
        self._running = Gauge(PREFIX + "running_requests", "Requests inside the running generation batch", registry=reg)
        self._batch = Histogram(PREFIX + "batch_size", "Rows of each generation micro-batch", buckets=BATCH_BUCKETS, registry=reg)
        self._memory = Gauge(
            PREFIX + "memory_bytes", "Memory at scrape time: process RSS, CUDA allocated and reserved", ["kind"], registry=reg
        )
        self._process = psutil.Process(os.getpid())

    def request_finished(self, route: str, status: int, seconds: float, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """One answered request: its route, HTTP status, seconds until the last byte and its token counts."""
        self._duration.labels(route=route).observe(seconds)
        self._requests.labels(route=route, code=str(status)).inc()
        self._prompt_tokens.inc(prompt_tokens)
        self._generation_tokens.inc(completion_tokens)

    def first_token(self, seconds: float) -> None:
        self._first_token.observe(seconds)

    def queue_depth(self, waiting: int) -> None:
        self._queue.set(waiting)

    def running(self, n: int) -> None:
        self._running.set(n)

    def batch(self, rows: int) -> None:
        self._batch.observe(rows)

    def render(self) -> tuple[bytes, str]:
        """The exposition text (memory read now) and its Content-Type, for a /metrics response."""
        self._memory.labels(kind="rss").set(self._process.memory_info().rss)
        if torch.cuda.is_available():
            self._memory.labels(kind="cuda_allocated").set(torch.cuda.memory_allocated())
            self._memory.labels(kind="cuda_reserved").set(torch.cuda.memory_reserved())
        # The classic text format (0.0.4): every name here is a legacy name, and Prometheus 2 and 3 both read it.
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
