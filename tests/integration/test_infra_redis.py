"""Real Redis: values and expiry round-trip, and the lifecycle of the ``RedisServer`` fixture."""

from __future__ import annotations

import time
import uuid

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.timeout(60)
def test_set_get_ttl_and_expiry_round_trip(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    key = f"test:roundtrip:{uuid.uuid4().hex}"
    forever = f"{key}:forever"
    try:
        assert client.get(key) is None
        assert client.ttl(key) == -2  # no such key

        assert client.set(forever, "kept")
        assert client.ttl(forever) == -1  # exists, no expiry

        payload = "résultats ✓".encode()  # binary-safe: bytes in, same bytes out
        assert client.set(key, payload, px=800)
        assert client.get(key) == payload
        assert 0 < client.pttl(key) <= 800

        deadline = time.monotonic() + 5.0
        while client.exists(key) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get(key) is None, "key outlived its TTL"
        assert client.ttl(key) == -2
        assert client.get(forever) == b"kept", "expiry removed an unrelated key"
    finally:
        client.delete(key, forever)
        client.close()


@pytest.mark.timeout(60)
def test_redis_server_restart_keeps_address_and_starts_empty() -> None:
    import redis

    from tandem_testing.infra import RedisServer

    with RedisServer() as server:
        url, data_dir = server.url, server.data_dir
        client = redis.Redis.from_url(url)
        client.set("k", "v")
        first_pid = server.pid

        server.restart()
        assert server.url == url and server.pid != first_pid
        # Same address, fresh process: no persistence, so the cache starts empty.
        assert client.get("k") is None
        client.close()

        server.kill()
        assert not server.running
        server.start()
        assert server.running and redis.Redis.from_url(url).ping()
    assert not data_dir.exists(), "close() left the data folder behind"
    assert not server.running
