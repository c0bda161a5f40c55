"""Caches responses to deterministic requests (temperature 0, or a fixed seed) under model revision + normalised request.

Streams are never cached (a hit would have to be re-chunked); non-deterministic requests must never be stored or served.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

# Fields that do not change what the model writes: who asks, how the answer travels, what the client stores.
IGNORED_FIELDS = frozenset({"user", "stream", "stream_options", "metadata", "store", "service_tier"})
# OpenAI's documented defaults, filled in so that `{"n": 1}` and `{}` are the same request.
DEFAULTS = {"n": 1, "echo": False, "presence_penalty": 0, "frequency_penalty": 0, "logprobs": False}
# Under greedy decoding these have no effect (vLLM and our server ignore them at temperature 0).
SAMPLING_ONLY_FIELDS = ("top_p", "top_k", "min_p", "seed")


def is_deterministic(body: dict) -> bool:
    """Temperature 0 or an integer seed, and not streamed; a missing temperature means the upstream's default (> 0)."""
    if body.get("stream"):
        return False
    temperature = body.get("temperature")
    seed = body.get("seed")
    return (isinstance(temperature, (int, float)) and temperature == 0) or (isinstance(seed, int) and not isinstance(seed, bool))


def _canonical_numbers(value):
    """0 and 0.0 (or 1 and 1.0) are the same parameter value but not the same JSON text."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _canonical_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical_numbers(v) for v in value]
    return value


def normalised_request(body: dict) -> dict:
    """The request as the model sees it: ignored fields and nulls dropped, defaults filled, greedy-irrelevant fields gone."""
    request = {k: v for k, v in body.items() if k not in IGNORED_FIELDS and v is not None}
    request = {**DEFAULTS, **request}
    if request.get("temperature") == 0:
        for name in SAMPLING_ONLY_FIELDS:
            request.pop(name, None)
    return _canonical_numbers(request)


def cache_key(model_revision: str, route: str, body: dict) -> str | None:
    """A hex digest, or None when the request must not be cached."""
    if not is_deterministic(body):
        return None
    text = json.dumps([model_revision, route, normalised_request(body)], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class MemoryCacheStore:
    """Bounded LRU with expiry, for one gateway replica."""

    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.max_entries, self.clock = max_entries, clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] <= self.clock():
                self._entries.pop(key, None)
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: str, value: bytes, ttl_seconds: float) -> None:
        with self._lock:
            self._entries[key] = (self.clock() + ttl_seconds, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


class RedisCacheStore:
    """Shared by every replica on the same Redis; Redis' own expiry enforces the TTL."""

    def __init__(self, client, prefix: str = "megatron_sota:gateway:cache:"):
        self.client, self.prefix = client, prefix

    def get(self, key: str) -> bytes | None:
        return self.client.get(self.prefix + key)

    def put(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self.client.set(self.prefix + key, value, px=max(1, int(ttl_seconds * 1000)))


class ResponseCache:
    """The cache the app asks: `key(route, body)` (None: do not cache), then `get` / `put` of response bodies."""

    def __init__(self, store, ttl_seconds: float, model_revision: str):
        self.store, self.ttl_seconds, self.model_revision = store, ttl_seconds, model_revision

    def key(self, route: str, body: dict) -> str | None:
        return cache_key(self.model_revision, route, body) if self.ttl_seconds > 0 else None

    def get(self, key: str) -> bytes | None:
        return self.store.get(key)

    def put(self, key: str, value: bytes) -> None:
        self.store.put(key, value, self.ttl_seconds)
