"""Token buckets per API key: `capacity` tokens, refilled at `rate` per second, one token per request.

Two stores with the same semantics (in memory, or one atomic Lua script in Redis); they must not queue or sleep.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from megatron_sota.errors import MegatronSotaError


def check_bucket(capacity: float, rate: float) -> None:
    problems = []
    if not capacity >= 1:
        problems.append(f"capacity (--burst): expected >= 1 request, found {capacity}")
    if not rate > 0:
        problems.append(f"rate (--rate): expected > 0 requests per second, found {rate}")
    if problems:
        raise MegatronSotaError("token bucket: " + "; ".join(problems))


def refill_and_take(tokens: float, elapsed: float, capacity: float, rate: float, cost: float) -> tuple[float, bool, float]:
    """(tokens left, allowed, seconds until `cost` tokens are there): the arithmetic the Lua script repeats."""
    tokens = min(capacity, tokens + max(0.0, elapsed) * rate)
    if tokens >= cost:
        return tokens - cost, True, 0.0
    return tokens, False, (cost - tokens) / rate


class MemoryTokenBuckets:
    """Buckets in this process (one gateway replica); thread-safe, and safe from async code (take never awaits)."""

    def __init__(self, capacity: float, rate: float, clock: Callable[[], float] = time.monotonic):
        check_bucket(capacity, rate)
        self.capacity, self.rate, self.clock = float(capacity), float(rate), clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, time of last take)
        self._lock = threading.Lock()

    def take(self, key: str, cost: float = 1.0) -> tuple[bool, float]:
        """(allowed, retry_after_seconds); retry_after is 0 when allowed."""
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens, allowed, retry_after = refill_and_take(tokens, now - last, self.capacity, self.rate, cost)
            # One entry per configured API key at most: keys are checked before buckets are touched.
            self._buckets[key] = (tokens, now)
        return allowed, retry_after


# Atomic in Redis (scripts run alone); the clock is the server's TIME, so gateway replicas on machines with
# skewed clocks still share one bucket. The hash expires once a full refill has happened: nothing is lost.
# Numbers travel as strings because Redis truncates Lua numbers to integers.
_TAKE_LUA = """
local capacity, rate, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local last = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - last) * rate)
local allowed, retry = 0, 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {allowed, tostring(retry)}
"""


class RedisTokenBuckets:
    """Buckets shared by every gateway replica that uses the same Redis; one round trip per take."""

    def __init__(self, client, capacity: float, rate: float, prefix: str = "megatron_sota:gateway:bucket:"):
        check_bucket(capacity, rate)
        self.capacity, self.rate, self.prefix = float(capacity), float(rate), prefix
        self._script = client.register_script(_TAKE_LUA)

    def take(self, key: str, cost: float = 1.0) -> tuple[bool, float]:
        allowed, retry_after = self._script(keys=[self.prefix + key], args=[repr(self.capacity), repr(self.rate), repr(float(cost))])
        return bool(int(allowed)), float(retry_after)


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds (RFC 9110); rounding up so a client that obeys it is not refused again."""
    return str(max(1, math.ceil(seconds)))
