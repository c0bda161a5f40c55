"""Token buckets: N+1 requests in a window refuse the last for that key only, and the bucket refills; both stores."""

import time

import pytest

from megatron_sota.errors import MegatronSotaError
from megatron_sota.serving.gateway.rate_limit import MemoryTokenBuckets, RedisTokenBuckets, retry_after_header
from tests.serving.redis_server import running_redis


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_memory_bucket_refuses_the_request_past_capacity_for_that_key_only_and_refills():
    clock = FakeClock()
    buckets = MemoryTokenBuckets(capacity=3, rate=0.5, clock=clock)
    assert [buckets.take("a")[0] for _ in range(3)] == [True, True, True]
    allowed, retry_after = buckets.take("a")
    assert not allowed and retry_after == pytest.approx(2.0)  # one token at 0.5/s
    assert buckets.take("b") == (True, 0.0)
    clock.now += 1.9
    assert not buckets.take("a")[0]
    clock.now += 0.2
    assert buckets.take("a")[0]
    assert not buckets.take("a")[0]
    clock.now += 100  # refills up to capacity, not beyond
    assert [buckets.take("a")[0] for _ in range(4)] == [True, True, True, False]


def test_bucket_settings_are_checked_together():
    with pytest.raises(MegatronSotaError, match=r"capacity.*found 0.*rate.*found -1"):
        MemoryTokenBuckets(capacity=0, rate=-1)


def test_retry_after_header_rounds_up_to_whole_seconds():
    assert [retry_after_header(s) for s in (0.0, 0.2, 1.0, 1.01)] == ["1", "1", "1", "2"]


@pytest.fixture(scope="module")
def redis_client(tmp_path_factory):
    import redis

    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        client = redis.Redis.from_url(url)
        yield client
        client.close()


def test_redis_bucket_refuses_the_request_past_capacity_for_that_key_only_and_refills(redis_client):
    buckets = RedisTokenBuckets(redis_client, capacity=3, rate=5.0, prefix="test:refill:")
    assert [buckets.take("a")[0] for _ in range(3)] == [True, True, True]
    allowed, retry_after = buckets.take("a")
    assert not allowed and 0.0 < retry_after <= 0.2  # 1 token at 5/s, less what elapsed since
    assert buckets.take("b")[0]
    time.sleep(retry_after + 0.05)  # Redis' own TIME drives the refill
    assert buckets.take("a")[0]
    assert not buckets.take("a")[0]
    ttl_ms = redis_client.pttl("test:refill:a")
    assert 0 < ttl_ms <= 3 / 5.0 * 1000 + 1000  # the hash expires once it would be full anyway


def test_redis_buckets_are_shared_by_two_gateways(redis_client):
    first, second = (RedisTokenBuckets(redis_client, capacity=2, rate=0.01, prefix="test:shared:") for _ in range(2))
    assert first.take("k")[0] and second.take("k")[0]
    assert not first.take("k")[0] and not second.take("k")[0]
