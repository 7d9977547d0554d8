"""Redis result cache: shared by every gateway replica; a dead Redis is a miss, not an error."""

from __future__ import annotations

import logging
import uuid
from urllib.parse import urlparse

from prometheus_client import Gauge

from tandem.cache.base import CACHE_BACKEND_UP, ResultCache
from tandem.cache.breaker import CircuitBreaker
from tandem.cache.redact import redact
from tandem.errors import InvalidInput

log = logging.getLogger(__name__)

CACHE_CIRCUIT_OPEN = Gauge("tandem_cache_circuit_open", "1 while the Redis cache's circuit breaker is open.")

# Delete the lock only if we still own it (it may have expired and been re-taken).
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class CacheUnavailable(ConnectionError):
    """Raised internally while the circuit is open; :meth:`ResultCache.get` turns it into a miss."""


class RedisCache(ResultCache):
    """Result cache on Redis (``redis://host:port/db``).

    Every call runs under a short socket timeout and a :class:`CircuitBreaker`: after
    ``failure_threshold`` consecutive failures Redis is skipped entirely for
    ``reset_after_s``, so searches run at full speed (as misses) while it is down. Fill locks
    are ``SET lock NX PX`` with a random token, released only by their owner.
    """

    backend = "redis"

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_s: float = 0.05,
        ttl_jitter: float = 0.1,
        failure_threshold: int = 3,
        reset_after_s: float = 5.0,
    ) -> None:
        import redis  # imported here: only the Redis backend needs the client

        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise InvalidInput(f"`redis_url` must look like redis://host:port/db, got {redact(url)!r}")
        super().__init__(ttl_jitter=ttl_jitter)
        self.url = url
        self._redis = redis.Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s,
            retry_on_timeout=False, health_check_interval=0,
        )
        self._errors = (redis.RedisError, OSError)
        self.breaker = CircuitBreaker(failure_threshold=failure_threshold, reset_after_s=reset_after_s)
        self._unlock = self._redis.register_script(_UNLOCK)
        self._tokens: dict[str, str] = {}
        self._up: bool | None = None  # last known state; None until the first answer or failure

    def describe(self) -> str:
        """``redis at host:port/db`` (the password, if any, left out)."""
        parsed = urlparse(self.url)
        if parsed.scheme == "unix":
            return f"redis at {parsed.path}"
        return f"redis at {parsed.hostname}:{parsed.port or 6379}{parsed.path or '/0'}"

    def _mark(self, up: bool, error: BaseException | None = None) -> None:
        """Record whether Redis answered; warn once when it goes away, note when it is back."""
        if up == self._up:
            return
        CACHE_BACKEND_UP.labels(self.backend).set(1.0 if up else 0.0)
        if not up:
            log.warning("result cache unreachable (%s: %s): searches run uncached until it answers",
                        self.describe(), redact(str(error)) if error else "no answer")
        elif self._up is not None:
            log.info("result cache reachable again (%s)", self.describe())
        self._up = up

    def ping(self) -> bool:
        """``PING`` within the socket timeout, outside the breaker (so recovery is seen)."""
        try:
            self._redis.ping()
        except self._errors as exc:
            self._mark(False, exc)
            return False
        self._mark(True)
        return True

    def _call(self, fn, *args, **kwargs):
        """Run one Redis command through the breaker; raises :class:`CacheUnavailable` when skipped."""
        if not self.breaker.allow():
            raise CacheUnavailable("redis circuit open")
        try:
            result = fn(*args, **kwargs)
        except self._errors as exc:
            self.breaker.record_failure()
            CACHE_CIRCUIT_OPEN.set(1.0 if self.breaker.state != "closed" else 0.0)
            self._mark(False, exc)
            raise
        self.breaker.record_success()
        CACHE_CIRCUIT_OPEN.set(0.0)
        self._mark(True)
        return result

    def _get(self, key: str) -> bytes | None:
        return self._call(self._redis.get, key)

    def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """``SET key value PX ttl`` (jittered); swallowed when Redis is down."""
        try:
            self._call(self._redis.set, key, value, px=max(1, int(self.jittered(ttl_s) * 1000)))
        except (CacheUnavailable, *self._errors):
            self.errors += 1

    def try_lock(self, key: str, ttl_s: float) -> bool:
        """``SET lock:key token NX PX ttl``; ``True`` (compute) also when Redis is down."""
        token = uuid.uuid4().hex
        try:
            got = self._call(self._redis.set, f"lock:{key}", token, nx=True, px=max(1, int(ttl_s * 1000)))
        except (CacheUnavailable, *self._errors):
            return True
        if got:
            self._tokens[key] = token
        return bool(got)

    def unlock(self, key: str) -> None:
        """Release the lock if this process still owns it."""
        token = self._tokens.pop(key, None)
        if token is None:
            return
        try:
            self._call(self._unlock, keys=[f"lock:{key}"], args=[token])
        except (CacheUnavailable, *self._errors):
            pass  # it expires on its own

    def fill(self, key: str, value: bytes, ttl_s: float) -> None:
        """``SET`` and the owner-checked unlock in one pipelined round trip."""
        token = self._tokens.pop(key, None)
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(key, value, px=max(1, int(self.jittered(ttl_s) * 1000)))
        if token is not None:
            self._unlock(keys=[f"lock:{key}"], args=[token], client=pipe)
        try:
            self._call(pipe.execute)
        except (CacheUnavailable, *self._errors):
            self.errors += 1

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()
