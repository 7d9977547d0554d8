"""RedisCache against a real redis-server: TTL with jitter, fill locks, outages."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from tandem.cache.redis_cache import RedisCache
from tandem_testing.infra import RedisServer

pytestmark = pytest.mark.integration


def key() -> str:
    return f"tandem:test:{uuid.uuid4().hex}"


def test_round_trip_and_jittered_ttl(redis_url: str) -> None:
    cache = RedisCache(redis_url, ttl_jitter=0.2)
    raw = redis.Redis.from_url(redis_url)
    keys = [key() for _ in range(30)]
    for k in keys:
        cache.set(k, b"\x00payload", ttl_s=100)
    assert cache.get(keys[0]) == b"\x00payload" and cache.get(key()) is None
    ttls = [raw.pttl(k) for k in keys]
    assert all(79_000 <= t <= 120_000 for t in ttls)
    assert len(set(ttls)) > 20  # spread, so keys written together do not expire together
    assert cache.hits == 1 and cache.misses == 1 and cache.hit_ratio() == pytest.approx(0.5)
    cache.close()


def test_entries_expire(redis_url: str) -> None:
    cache = RedisCache(redis_url, ttl_jitter=0.0)
    k = key()
    cache.set(k, b"v", ttl_s=0.05)
    time.sleep(0.15)
    assert cache.get(k) is None
    cache.close()


def test_fill_lock_is_set_nx_and_owner_released(redis_url: str) -> None:
    a, b = RedisCache(redis_url), RedisCache(redis_url)
    k = key()
    assert a.try_lock(k, ttl_s=5)
    assert not b.try_lock(k, ttl_s=5)
    b.unlock(k)  # not b's lock: must not release it
    assert not b.try_lock(k, ttl_s=5)
    a.unlock(k)
    assert b.try_lock(k, ttl_s=0.05)
    time.sleep(0.15)  # expires on its own: a crashed holder cannot wedge the key
    assert a.try_lock(k, ttl_s=5)
    a.close(), b.close()


def test_outage_is_a_miss_and_the_breaker_recovers() -> None:
    with RedisServer() as server:
        cache = RedisCache(server.url, failure_threshold=2, reset_after_s=0.3)
        k = key()
        cache.set(k, b"v", 60)
        assert cache.get(k) == b"v"
        server.kill()
        assert cache.get(k) is None and cache.get(k) is None
        assert cache.breaker.state == "open"
        started = time.perf_counter()
        for _ in range(500):
            assert cache.get(k) is None
        assert (time.perf_counter() - started) / 500 < 0.0005  # open circuit: no network at all
        server.restart()
        time.sleep(0.35)  # half-open: the next call is the trial
        cache.set(k, b"w", 60)
        assert cache.breaker.state == "closed"
        assert cache.get(k) == b"w"
        cache.close()


def test_fill_stores_and_releases_in_one_round_trip(redis_url: str) -> None:
    a, b = RedisCache(redis_url), RedisCache(redis_url)
    k = key()
    assert a.try_lock(k, ttl_s=5) and not b.try_lock(k, ttl_s=5)
    a.fill(k, b"result", ttl_s=60)
    assert b.get(k) == b"result"
    assert b.try_lock(k, ttl_s=5)  # released by the fill
    b.fill(k, b"again", ttl_s=60)
    a.fill(k, b"not-locked", ttl_s=60)  # without a lock it is a plain set
    assert b.get(k) == b"not-locked"
    a.close(), b.close()
