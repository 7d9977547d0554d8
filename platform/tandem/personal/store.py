"""Where profiles live: a bounded in-process store (the embedded default) or Redis with a TTL.

Reads are on the search path, so they must be cheap and must never fail a search: the Redis
store answers within a short socket timeout, goes through a
:class:`~tandem.cache.breaker.CircuitBreaker` (after a few failures Redis is skipped at no
cost until it may be back) and turns every error — a dead Redis, a corrupt entry — into
"no profile", counted in :attr:`errors`. A search without a profile is simply not
personalised; it is not degraded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from tandem.cache.breaker import CircuitBreaker
from tandem.cache.redact import redact
from tandem.errors import CorruptArtifact, InvalidInput
from tandem.personal.profile import ProfileConfig, UserProfile

log = logging.getLogger(__name__)
KEY_PREFIX = "tandem:profile:"


class ProfileStore(Protocol):
    """Profiles by user id."""

    backend: str

    def get(self, user_id: str) -> UserProfile | None:
        """The user's profile, ``None`` when unknown or unreachable (never raises)."""
        ...

    def get_strict(self, user_id: str) -> UserProfile | None:
        """Like :meth:`get`, but an unreachable store raises (the consumer must not overwrite
        a profile it could not read with a fresh one)."""
        ...

    def put(self, user_id: str, profile: UserProfile) -> None:
        """Store ``profile`` (with the store's TTL)."""
        ...


class MemoryProfileStore:
    """At most ``config.max_users`` profiles in this process, least recently used evicted
    first, each dropped ``config.ttl_s`` after its last write."""

    backend = "memory"

    def __init__(self, config: ProfileConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or ProfileConfig()
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._mu = threading.Lock()
        self.errors = 0

    def get(self, user_id: str) -> UserProfile | None:
        """The stored profile (a fresh copy: callers may change it)."""
        with self._mu:
            entry = self._data.get(user_id)
            if entry is None:
                return None
            if self._clock() >= entry[0]:
                del self._data[user_id]
                return None
            self._data.move_to_end(user_id)
        return UserProfile.from_bytes(entry[1])

    get_strict = get

    def put(self, user_id: str, profile: UserProfile) -> None:
        """Store a copy, evicting the least recently used users beyond capacity."""
        data = profile.to_bytes()
        with self._mu:
            self._data[user_id] = (self._clock() + self.config.ttl_s, data)
            self._data.move_to_end(user_id)
            while len(self._data) > self.config.max_users:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class RedisProfileStore:
    """Profiles under ``tandem:profile:<user>`` with ``EX ttl_s`` (see the module docstring)."""

    backend = "redis"

    def __init__(self, url: str, config: ProfileConfig | None = None, *, socket_timeout_s: float = 0.02,
                 write_timeout_s: float = 2.0, failure_threshold: int = 3, reset_after_s: float = 5.0) -> None:
        import redis

        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise InvalidInput(f"`profile redis url` must look like redis://host:port/db, got {redact(url)!r}")
        self.config = config or ProfileConfig()
        self._redis = redis.Redis.from_url(url, socket_timeout=socket_timeout_s,
                                           socket_connect_timeout=socket_timeout_s, retry_on_timeout=False,
                                           health_check_interval=0)
        # The consumer's reads and writes are off the search path: they may wait longer.
        self._writer = redis.Redis.from_url(url, socket_timeout=write_timeout_s, socket_connect_timeout=write_timeout_s)
        self._errors = (redis.RedisError, OSError)
        self.breaker = CircuitBreaker(failure_threshold=failure_threshold, reset_after_s=reset_after_s)
        self.errors = 0
        self._warned = False

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.breaker.record_failure()
        if not self._warned:
            log.warning("profile store unreachable (%s): searches run without personalisation",
                        redact(str(exc))[:200])
            self._warned = True

    def get(self, user_id: str) -> UserProfile | None:
        """``GET``; ``None`` when unknown, corrupt, Redis down or its circuit open."""
        if not self.breaker.allow():
            return None
        try:
            data = self._redis.get(KEY_PREFIX + user_id)
        except self._errors as exc:
            self._failed(exc)
            return None
        self.breaker.record_success()
        self._warned = False
        if data is None:
            return None
        try:
            return UserProfile.from_bytes(data)
        except CorruptArtifact:
            self.errors += 1
            return None

    def get_strict(self, user_id: str) -> UserProfile | None:
        """``GET`` outside the breaker; the client's error propagates, a corrupt entry is ``None``."""
        data = self._writer.get(KEY_PREFIX + user_id)
        try:
            return None if data is None else UserProfile.from_bytes(data)
        except CorruptArtifact:
            self.errors += 1
            return None

    def put(self, user_id: str, profile: UserProfile) -> None:
        """``SET ... EX ttl``; raises the client's error (the consumer retries the batch)."""
        self._writer.set(KEY_PREFIX + user_id, profile.to_bytes(), ex=max(1, int(self.config.ttl_s)))


def open_profile_store(url: str | None, config: ProfileConfig | None = None) -> ProfileStore:
    """Redis when ``url`` is set, else the in-process store."""
    return RedisProfileStore(url, config) if url else MemoryProfileStore(config)
