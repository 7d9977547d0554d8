"""In-process LRU cache, cache keys, the circuit breaker, and Redis-down behaviour (no server)."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from tandem.cache import LruCache, cache_key, make_cache
from tandem.cache.breaker import CircuitBreaker
from tandem.errors import InvalidInput


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_get_set_and_ttl_expiry() -> None:
    clock = Clock()
    c = LruCache(ttl_jitter=0.0, clock=clock)
    assert c.get("k") is None
    c.set("k", b"v", ttl_s=10)
    assert c.get("k") == b"v"
    clock.t += 9.9
    assert c.get("k") == b"v"
    clock.t += 0.2
    assert c.get("k") is None
    assert len(c) == 0


def test_least_recently_used_goes_first() -> None:
    c = LruCache(max_entries=2)
    c.set("a", b"1", 60)
    c.set("b", b"2", 60)
    assert c.get("a") == b"1"  # a is now the most recent
    c.set("c", b"3", 60)
    assert c.get("b") is None
    assert c.get("a") == b"1" and c.get("c") == b"3"


def test_ttl_jitter_stays_in_bounds_and_varies() -> None:
    c = LruCache(ttl_jitter=0.2)
    ttls = [c.jittered(100.0) for _ in range(200)]
    assert all(80.0 <= t <= 120.0 for t in ttls)
    assert len({round(t, 6) for t in ttls}) > 100


def test_fill_lock_is_exclusive_and_expires() -> None:
    clock = Clock()
    c = LruCache(clock=clock)
    assert c.try_lock("k", ttl_s=1.0)
    assert not c.try_lock("k", ttl_s=1.0)
    clock.t += 1.01
    assert c.try_lock("k", ttl_s=1.0)  # a crashed holder does not wedge the key
    c.unlock("k")
    assert c.try_lock("k", ttl_s=1.0)


def test_hit_ratio_is_counted_and_exported() -> None:
    c = LruCache()
    before = REGISTRY.get_sample_value("tandem_cache_lookups_total", {"backend": "lru", "result": "hit"}) or 0
    c.set("k", b"v", 60)
    c.get("k"), c.get("k"), c.get("nope")
    assert c.hit_ratio() == pytest.approx(2 / 3)
    assert REGISTRY.get_sample_value("tandem_cache_lookups_total", {"backend": "lru", "result": "hit"}) == before + 2
    assert REGISTRY.get_sample_value("tandem_cache_hit_ratio", {"backend": "lru"}) == pytest.approx(2 / 3)


@pytest.mark.parametrize("kwargs", [{"max_entries": 0}, {"ttl_jitter": 1.0}, {"ttl_jitter": -0.1}])
def test_bad_lru_parameters_name_the_field(kwargs: dict) -> None:
    with pytest.raises(InvalidInput, match="`(max_entries|ttl_jitter)`"):
        LruCache(**kwargs)


V = {"bm25": "idx-3", "generative": "base-2+adapter-7", "fusion": "rrf:k=60:"}


def test_key_normalises_query_text() -> None:
    k = cache_key("cordless  drill", {"top_k": 10}, V)
    assert k == cache_key("  cordless drill ", {"top_k": 10}, V)
    assert k == cache_key("cordless&nbsp;drill".replace("&nbsp;", " "), {"top_k": 10}, V)
    assert k.startswith("tandem:search:v1:")


def test_key_changes_with_everything_that_changes_results() -> None:
    base = cache_key("drill", {"top_k": 10}, V)
    assert cache_key("drills", {"top_k": 10}, V) != base
    assert cache_key("drill", {"top_k": 11}, V) != base
    assert cache_key("drill", {"top_k": 10}, V, [{"field": "price", "max": 50}]) != base
    for name in V:
        assert cache_key("drill", {"top_k": 10}, {**V, name: V[name] + "'"}) != base


def test_key_ignores_mapping_order() -> None:
    assert cache_key("d", {"a": 1, "b": 2}, {"x": "1", "y": "2"}) == \
        cache_key("d", {"b": 2, "a": 1}, {"y": "2", "x": "1"})


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=2, reset_after_s=5, clock=clock)
    assert b.allow()
    b.record_failure()
    assert b.state == "closed" and b.allow()
    b.record_failure()
    assert b.state == "open" and not b.allow()
    clock.t += 5
    assert b.state == "half-open"
    assert b.allow() and not b.allow()  # one trial at a time
    b.record_failure()
    assert b.state == "open"
    clock.t += 5
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.allow()


def test_dead_redis_is_a_fast_miss() -> None:
    """Port 1 on loopback refuses connections: after the breaker opens, lookups cost nothing."""
    cache = make_cache("redis://127.0.0.1:1/0")
    for _ in range(3):
        assert cache.get("k") is None
    assert cache.breaker.state == "open"
    started = time.perf_counter()
    for _ in range(1000):
        assert cache.get("k") is None
        cache.set("k", b"v", 10)
        assert cache.try_lock("k", 1.0)  # down → compute, do not wait
    assert (time.perf_counter() - started) / 1000 < 0.0005
    assert cache.errors >= 1000
    cache.close()


def test_make_cache_rejects_non_redis_urls() -> None:
    with pytest.raises(InvalidInput, match="`redis_url`"):
        make_cache("http://localhost:6379")
