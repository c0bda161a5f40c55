"""The gateway's FastAPI app: API key, token bucket, JSON, prompt screen, cache, upstream, output checks, in that order.

Proxies any OpenAI-compatible upstream (our server, vLLM); it must not change a request's body on its way upstream.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from megatron_sota.serving.gateway.metrics import GatewayMetrics
from megatron_sota.serving.openai_api import error_body
from megatron_sota.serving.gateway.output_checks import OutputChecker, check_response
from megatron_sota.serving.gateway.rate_limit import MemoryTokenBuckets, RedisTokenBuckets, retry_after_header
from megatron_sota.serving.gateway.response_cache import MemoryCacheStore, RedisCacheStore, ResponseCache
from megatron_sota.serving.gateway.screen import PromptScreen, prompt_texts

log = logging.getLogger(__name__)

CACHE_HEADER = "x-megatron-sota-cache"


@dataclass
class GatewaySettings:
    upstream_url: str
    """base URL of the OpenAI-compatible upstream, without /v1 (http://127.0.0.1:8000)"""
    api_keys: frozenset[str]
    rate_per_second: float = 1.0
    """token-bucket refill per API key: requests per second on average"""
    burst: float = 20
    """token-bucket capacity: requests a key may send at once"""
    redis_url: str | None = None
    """buckets and cache in Redis (shared by replicas); in this process when None"""
    cache_ttl_seconds: float = 300.0
    """0 turns the response cache off"""
    model_revision: str = "unversioned"
    """part of every cache key: change it when the upstream's weights change"""
    special_tokens: tuple[str, ...] = ()
    """the upstream tokenizer's special and role tokens, screened on top of the common ones"""
    upstream_api_key: str | None = None
    """sent upstream as the bearer token; clients' keys never leave the gateway"""
    upstream_timeout_seconds: float = 600.0
    max_output_chars: int = 100_000
    check_toxicity: bool = True
    upstream_transport: httpx.AsyncBaseTransport | None = None
    """for tests: an httpx.ASGITransport of an in-process upstream"""


def openai_error(status: int, message: str, error_type: str, code: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, error_type, code), status, headers=headers)


def _unauthorized() -> JSONResponse:
    return openai_error(401, "missing or unknown API key (Authorization: Bearer <key>)", "invalid_request_error",
                        "invalid_api_key")


def _passthrough_error(status: int, content: bytes) -> Response:
    """The upstream's own error when it is OpenAI-shaped; otherwise its text wrapped in that shape."""
    try:
        if isinstance(json.loads(content).get("error"), dict):
            return Response(content, status, media_type="application/json")
    except (ValueError, AttributeError):
        pass
    text = content.decode(errors="replace")[:500]
    return openai_error(status, f"upstream answered {status}: {text}", "upstream_error", f"upstream_{status}")


class _Gateway:
    """The routes' shared state: one per app."""

    def __init__(self, settings: GatewaySettings):
        self.settings = settings
        self.redis = None
        if settings.redis_url:
            import redis

            self.redis = redis.Redis.from_url(settings.redis_url)
            self.buckets = RedisTokenBuckets(self.redis, settings.burst, settings.rate_per_second)
            store = RedisCacheStore(self.redis)
        else:
            self.buckets = MemoryTokenBuckets(settings.burst, settings.rate_per_second)
            store = MemoryCacheStore()
        self.cache = ResponseCache(store, settings.cache_ttl_seconds, settings.model_revision)
        self.screen = PromptScreen(settings.special_tokens)
        self.checker = OutputChecker(settings.max_output_chars, check_toxicity=settings.check_toxicity)
        self.metrics = GatewayMetrics()
        # Hashes, so the buckets in Redis are not named by the secrets themselves.
        self.key_ids = {hashlib.sha256(k.encode()).hexdigest()[:32] for k in settings.api_keys}
        headers = {"Authorization": f"Bearer {settings.upstream_api_key}"} if settings.upstream_api_key else {}
        self.client = httpx.AsyncClient(
            base_url=settings.upstream_url.rstrip("/"), headers=headers,
            timeout=settings.upstream_timeout_seconds, transport=settings.upstream_transport,
        )

    def key_id(self, request: Request) -> str | None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key_id = hashlib.sha256(key.strip().encode()).hexdigest()[:32]
        return key_id if scheme.lower() == "bearer" and key_id in self.key_ids else None

    async def generate(self, request: Request, route: str, path: str) -> Response:
        start = time.perf_counter()
        response, decision = await self._generate(request, route, path, start)
        if decision is not None:  # a stream counts itself when it ends
            self.metrics.decide(route, decision)
            self.metrics.duration.labels(route).observe(time.perf_counter() - start)
        return response

    async def _generate(self, request: Request, route: str, path: str, start: float) -> tuple[Response, str | None]:
        key_id = self.key_id(request)
        if key_id is None:
            return _unauthorized(), "unauthorized"
        allowed, retry_after = await run_in_threadpool(self.buckets.take, key_id)
        if not allowed:
            return openai_error(429, f"rate limit reached for this API key; retry after {retry_after:.2f} s", "requests",
                                "rate_limit_exceeded", {"Retry-After": retry_after_header(retry_after)}), "rate_limited"
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return openai_error(400, "request body: expected a JSON object", "invalid_request_error", "invalid_json"), "bad_request"
        findings = [f for text in prompt_texts(route, body) for f in self.screen.findings(text)]
        if findings:
            for finding in findings:
                self.metrics.screen_findings.labels(finding.rule).inc()
            log.warning("gateway: refused a %s request: %s", route, "; ".join(map(str, findings)))
            # Rule names only: the matched text would tell an attacker exactly what to rephrase.
            rules = ", ".join(sorted({f.rule for f in findings}))
            return openai_error(400, f"prompt refused by the gateway's screen ({rules})", "invalid_request_error",
                                "prompt_injection"), "injection_refused"
        cache_key = self.cache.key(route, body)
        if cache_key is not None:
            cached = await run_in_threadpool(self.cache.get, cache_key)
            self.metrics.cache_lookups.labels("miss" if cached is None else "hit").inc()
            if cached is not None:
                return Response(cached, media_type="application/json", headers={CACHE_HEADER: "hit"}), "cache_hit"
        try:
            upstream = await self.client.send(
                self.client.build_request("POST", path, content=raw, headers={"Content-Type": "application/json"}),
                stream=True,
            )
        except httpx.HTTPError as e:
            log.error("gateway: upstream %s failed: %r", self.settings.upstream_url, e)
            return openai_error(502, f"upstream unreachable ({type(e).__name__})", "upstream_error",
                                "upstream_unavailable"), "upstream_error"
        if not upstream.is_success:
            content = await upstream.aread()
            await upstream.aclose()
            decision = "upstream_error" if upstream.status_code >= 500 else "upstream_rejected"
            return _passthrough_error(upstream.status_code, content), decision
        if body.get("stream"):
            return self._relay(upstream, route, start), None
        content = await upstream.aread()
        await upstream.aclose()
        return await self._checked(route, body, content, cache_key)

    def _relay(self, upstream: httpx.Response, route: str, start: float) -> StreamingResponse:
        """Server-sent events byte for byte; output checks do not apply to streams (see docs)."""
        async def chunks():
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()
                self.metrics.decide(route, "allowed")
                self.metrics.duration.labels(route).observe(time.perf_counter() - start)

        media_type = upstream.headers.get("content-type", "text/event-stream")
        return StreamingResponse(chunks(), upstream.status_code, media_type=media_type)

    async def _checked(self, route: str, body: dict, content: bytes, cache_key: str | None) -> tuple[Response, str]:
        try:
            payload = json.loads(content)
        except ValueError:
            return openai_error(502, "upstream answered with a body that is not JSON", "upstream_error",
                                "bad_upstream_response"), "upstream_error"
        problems = await run_in_threadpool(check_response, self.checker, route, body, payload)
        for problem, n in problems.items():
            self.metrics.output_problems.labels(problem).inc(n)
        refused = "toxic" in problems
        decision = "output_refused" if refused else "output_redacted" if any(p.startswith("pii_") for p in problems) else "allowed"
        out = json.dumps(payload, ensure_ascii=False).encode() if problems else content
        headers = None
        if cache_key is not None:
            headers = {CACHE_HEADER: "miss"}
            if not refused:  # a refusal may be a false positive of the model: let the next try reach the upstream
                await run_in_threadpool(self.cache.put, cache_key, out)
        return Response(out, media_type="application/json", headers=headers), decision


def build_gateway_app(settings: GatewaySettings) -> FastAPI:
    gateway = _Gateway(settings)

    @asynccontextmanager
    async def lifespan(app):
        yield
        await gateway.client.aclose()
        if gateway.redis is not None:
            gateway.redis.close()

    app = FastAPI(title="megatron_sota gateway", lifespan=lifespan)
    app.state.gateway = gateway

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await gateway.generate(request, "completions", "/v1/completions")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await gateway.generate(request, "chat_completions", "/v1/chat/completions")

    @app.get("/v1/models")
    async def models(request: Request):
        if gateway.key_id(request) is None:
            return _unauthorized()
        try:
            upstream = await gateway.client.get("/v1/models")
        except httpx.HTTPError as e:
            return openai_error(502, f"upstream unreachable ({type(e).__name__})", "upstream_error", "upstream_unavailable")
        if not upstream.is_success:
            return _passthrough_error(upstream.status_code, upstream.content)
        return Response(upstream.content, media_type="application/json")

    @app.get("/health")
    async def health():
        """200 when the upstream's /health answers 2xx: a load balancer should not send work here otherwise."""
        try:
            ok = (await gateway.client.get("/health", timeout=5.0)).is_success
        except httpx.HTTPError:
            ok = False
        return JSONResponse({"status": "ok" if ok else "upstream unavailable"}, 200 if ok else 503)

    @app.get("/metrics")
    async def metrics():
        return Response(gateway.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
