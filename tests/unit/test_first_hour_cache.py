"""A result cache that cannot be reached is said out loud (issue 24): one warning naming the
address, the ``tandem_cache_backend_up`` gauge at 0, ``ping`` false; and every server logs
which cache it uses. Port 1 on loopback refuses connections, so no Redis is needed."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from tandem.cache import LruCache, make_cache


def _up(backend: str) -> float | None:
    return REGISTRY.get_sample_value("tandem_cache_backend_up", {"backend": backend})


def test_make_cache_logs_which_cache_it_made(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tandem.cache"):
        make_cache(None, max_entries=5)
        make_cache("redis://:s3cret@127.0.0.1:1/2").close()
    messages = [r.getMessage() for r in caplog.records]
    assert "result cache: in-process lru (max 5 entries)" in messages
    assert "result cache: redis at 127.0.0.1:1/2" in messages
    assert not any("s3cret" in m for m in messages), "the password reached the log"


def test_unreachable_redis_warns_once_and_sets_the_gauge(caplog: pytest.LogCaptureFixture) -> None:
    cache = make_cache("redis://127.0.0.1:1/0")
    try:
        with caplog.at_level(logging.WARNING, logger="tandem.cache"):
            assert cache.ping() is False
            for _ in range(5):  # lookups keep failing (then the breaker skips Redis)
                assert cache.get("k") is None
            assert cache.ping() is False
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "result cache unreachable (redis at 127.0.0.1:1/0" in warnings[0]
        assert "searches run uncached" in warnings[0]
        assert _up("redis") == 0.0
    finally:
        cache.close()


def test_the_in_process_cache_is_always_up() -> None:
    cache = LruCache(max_entries=3)
    assert cache.ping() is True
    assert _up("lru") == 1.0
