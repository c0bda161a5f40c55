"""The gateway's Prometheus metrics, in a registry of its own: one decision counted per request, cache lookups, latency.

Names are a contract with the alert rules (megatron_sota/serving/monitoring); it must not hold any request logic.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# Exactly one per request, the first that applies in this order; the sum over decisions is the request count.
DECISIONS = (
    "unauthorized", "rate_limited", "bad_request", "injection_refused", "cache_hit",
    "upstream_error", "upstream_rejected", "output_refused", "output_redacted", "allowed",
)
# Up to 64 s: generation is slow; 2 s is a boundary because the p99 alert fires above 2000 ms.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)


class GatewayMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "megatron_sota_gateway_requests", "Requests by route and the gateway's decision (one decision per request).",
            ["route", "decision"], registry=self.registry,
        )
        self.cache_lookups = Counter(
            "megatron_sota_gateway_cache_lookups", "Response-cache lookups of deterministic requests.",
            ["result"], registry=self.registry,
        )
        self.screen_findings = Counter(
            "megatron_sota_gateway_screen_findings", "Prompt-screen rules that fired (several per refused request).",
            ["rule"], registry=self.registry,
        )
        self.output_problems = Counter(
            "megatron_sota_gateway_output_problems", "Output checks that fired, per choice (pii_<type>, toxic, ...).",
            ["problem"], registry=self.registry,
        )
        self.duration = Histogram(
            "megatron_sota_gateway_request_duration_seconds", "Time from request to the last byte sent, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        for decision in DECISIONS:  # present at 0 from the start, so rate() and alert rules see every series
            for route in ("completions", "chat_completions"):
                self.requests.labels(route, decision)
        for result in ("hit", "miss"):
            self.cache_lookups.labels(result)

    def decide(self, route: str, decision: str) -> None:
        self.requests.labels(route, decision).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
