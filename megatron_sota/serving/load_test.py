"""A bounded load test of any OpenAI-compatible server: N requests at a fixed concurrency, timed one by one.

It measures from the client's side only (latency, time to first streamed token, completion tokens from `usage`,
errors by status); it must not import the server, and it never retries: a 429 is counted as what it is.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import asdict, dataclass

import httpx

PERCENTILE_METHOD = "linear interpolation between closest ranks (numpy.percentile's default, method='linear')"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of values: position (n - 1) * q / 100 in sorted order, interpolated linearly.

    NaN for no values. Same as numpy.percentile(values, q) (its default method); written out so the report's
    definition is in this file, not a library default that could change.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


@dataclass
class RequestResult:
    """One request as the client saw it. status 0: no HTTP answer (connection error, timeout)."""

    status: int
    seconds: float
    first_token_seconds: float | None = None
    completion_tokens: int | None = None  # None: the answer carried no usage
    error: str | None = None


@dataclass
class LoadSettings:
    url: str  # base URL, e.g. http://127.0.0.1:8000/v1 (a trailing /v1 is added when missing)
    model: str
    prompts: list[str]
    requests: int = 200
    concurrency: int = 8
    max_tokens: int = 64
    stream: bool = False
    chat: bool = False
    temperature: float | None = None  # None: the server's default
    api_key: str | None = None
    timeout: float = 120.0


def api_base(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def request_body(settings: LoadSettings, index: int) -> dict:
    prompt = settings.prompts[index % len(settings.prompts)]
    body: dict = {"model": settings.model, "max_tokens": settings.max_tokens}
    if settings.chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    if settings.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def chunk_text(chunk: dict) -> str:
    """The text a completion or chat chunk adds (empty for the usage-only final chunk)."""
    text = ""
    for choice in chunk.get("choices") or []:
        text += choice.get("text") or (choice.get("delta") or {}).get("content") or ""
    return text


async def one_request(client: httpx.AsyncClient, settings: LoadSettings, index: int) -> RequestResult:
    path = "/chat/completions" if settings.chat else "/completions"
    start = time.perf_counter()
    first = None
    usage = None
    try:
        async with client.stream("POST", path, json=request_body(settings, index)) as response:
            if response.status_code >= 400:
                body = (await response.aread()).decode(errors="replace")
                return RequestResult(response.status_code, time.perf_counter() - start, error=body[:300])
            if settings.stream:
                async for line in response.aiter_lines():
                    if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                        continue
                    chunk = json.loads(line[5:])
                    if first is None and chunk_text(chunk):
                        first = time.perf_counter() - start
                    usage = chunk.get("usage") or usage
            else:
                usage = json.loads(await response.aread()).get("usage")
        seconds = time.perf_counter() - start
    except (httpx.HTTPError, json.JSONDecodeError) as err:  # the server's failure, counted like an error status
        return RequestResult(0, time.perf_counter() - start, error=f"{type(err).__name__}: {err}"[:300])
    tokens = usage.get("completion_tokens") if usage else None
    return RequestResult(response.status_code, seconds, first, tokens)


async def run_requests(settings: LoadSettings) -> tuple[list[RequestResult], float]:
    """All settings.requests results (in request order) and the wall seconds from the first start to the last end."""
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    limits = httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency)
    results: list[RequestResult | None] = [None] * settings.requests
    next_index = iter(range(settings.requests))

    async with httpx.AsyncClient(base_url=api_base(settings.url), headers=headers, limits=limits, timeout=settings.timeout) as client:

        async def worker() -> None:
            for index in next_index:  # one shared iterator: each worker takes the next request when it is free
                results[index] = await one_request(client, settings, index)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(settings.concurrency)))
        wall = time.perf_counter() - start
    return [r for r in results if r is not None], wall


def summarize(settings: LoadSettings, results: list[RequestResult], wall_seconds: float) -> dict:
    """The report: latency and TTFT percentiles over successful requests, tokens/s and requests/s over wall time."""
    ok = [r for r in results if 200 <= r.status < 300]
    errors: dict[str, int] = {}
    examples: dict[str, str | None] = {}
    for r in results:
        if not 200 <= r.status < 300:
            key = str(r.status) if r.status else "no_response"
            errors[key] = errors.get(key, 0) + 1
            examples.setdefault(key, r.error)
    latencies = [r.seconds for r in ok]
    first_tokens = [r.first_token_seconds for r in ok if r.first_token_seconds is not None]
    tokens = sum(r.completion_tokens or 0 for r in ok)
    return {
        "url": settings.url, "model": settings.model, "chat": settings.chat, "stream": settings.stream,
        "requests": len(results), "concurrency": settings.concurrency, "max_tokens": settings.max_tokens,
        "wall_seconds": wall_seconds,
        "succeeded": len(ok),
        "error_count": len(results) - len(ok),
        "errors_by_status": errors,
        "error_examples": examples,  # the first answer's body (300 characters) for each status
        # None, not NaN, where no request succeeded (or none streamed): NaN is not JSON
        "latency_p50_s": percentile(latencies, 50) if latencies else None,
        "latency_p99_s": percentile(latencies, 99) if latencies else None,
        "ttft_p50_s": percentile(first_tokens, 50) if first_tokens else None,
        "completion_tokens": tokens,
        "requests_without_usage": sum(r.completion_tokens is None for r in ok),
        "tokens_per_second": tokens / wall_seconds,
        "requests_per_second": len(ok) / wall_seconds,
        "percentile_method": PERCENTILE_METHOD,
        "per_request": [asdict(r) for r in results],
    }


def run_load_test(settings: LoadSettings) -> dict:
    """Runs the load and returns summarize()'s report."""
    results, wall = asyncio.run(run_requests(settings))
    return summarize(settings, results, wall)
