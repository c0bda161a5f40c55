"""The response cache: deterministic requests only, keys on model revision + normalised request, TTL; both stores."""

import pytest

from megatron_sota.serving.gateway.response_cache import MemoryCacheStore, RedisCacheStore, ResponseCache, cache_key
from tests.serving.redis_server import running_redis

GREEDY = {"model": "tiny", "prompt": "def f(", "max_tokens": 8, "temperature": 0}


def test_equivalent_greedy_requests_share_a_key():
    same = [
        {**GREEDY, "temperature": 0.0, "n": 1, "user": "alice", "stream": False, "top_p": 0.5, "seed": 3},
        {"max_tokens": 8.0, "prompt": "def f(", "temperature": 0, "model": "tiny", "stream_options": None, "echo": None},
    ]
    assert {cache_key("rev1", "completions", body) for body in same} == {cache_key("rev1", "completions", GREEDY)}


def test_what_changes_the_output_changes_the_key():
    key = cache_key("rev1", "completions", GREEDY)
    others = [
        cache_key("rev2", "completions", GREEDY),
        cache_key("rev1", "chat_completions", GREEDY),
        cache_key("rev1", "completions", {**GREEDY, "max_tokens": 9}),
        cache_key("rev1", "completions", {**GREEDY, "n": 2}),
        cache_key("rev1", "completions", {**GREEDY, "temperature": 0.7, "seed": 1}),
        cache_key("rev1", "completions", {**GREEDY, "temperature": 0.7, "seed": 2}),
    ]
    assert None not in others and len({key, *others}) == 7


@pytest.mark.parametrize("body", [
    {k: v for k, v in GREEDY.items() if k != "temperature"},  # the upstream's default temperature samples
    {**GREEDY, "temperature": 0.7},
    {**GREEDY, "stream": True},
    {**GREEDY, "temperature": 0.7, "seed": True},
    {**GREEDY, "temperature": 0.7, "seed": None},
])
def test_non_deterministic_and_streamed_requests_get_no_key(body):
    assert cache_key("rev1", "completions", body) is None


def test_memory_store_expires_after_ttl():
    now = [0.0]
    cache = ResponseCache(MemoryCacheStore(clock=lambda: now[0]), ttl_seconds=10, model_revision="rev1")
    key = cache.key("completions", GREEDY)
    cache.put(key, b'{"id": 1}')
    now[0] = 9.9
    assert cache.get(key) == b'{"id": 1}'
    now[0] = 10.0
    assert cache.get(key) is None


def test_memory_store_drops_least_recent_entries_past_its_bound():
    store = MemoryCacheStore(max_entries=2)
    for key in ("a", "b"):
        store.put(key, key.encode(), 60)
    store.get("a")
    store.put("c", b"c", 60)
    assert [store.get(k) for k in ("a", "b", "c")] == [b"a", None, b"c"]


def test_zero_ttl_turns_the_cache_off():
    assert ResponseCache(MemoryCacheStore(), ttl_seconds=0, model_revision="rev1").key("completions", GREEDY) is None


def test_redis_store_returns_the_body_and_expires_it(tmp_path):
    import redis

    with running_redis(tmp_path) as url:
        client = redis.Redis.from_url(url)
        cache = ResponseCache(RedisCacheStore(client), ttl_seconds=30, model_revision="rev1")
        key = cache.key("completions", GREEDY)
        assert cache.get(key) is None
        cache.put(key, b'{"id": 1}')
        assert cache.get(key) == b'{"id": 1}'
        assert 29_000 < client.pttl("megatron_sota:gateway:cache:" + key) <= 30_000
        client.close()
