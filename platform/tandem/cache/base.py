"""The result-cache interface and the hit/miss accounting every backend shares."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod

from prometheus_client import Counter, Gauge

from tandem.errors import InvalidInput

CACHE_LOOKUPS = Counter(
    "tandem_cache_lookups_total", "Result-cache lookups by backend and outcome (hit, miss, error).",
    ["backend", "result"],
)
CACHE_HIT_RATIO = Gauge(
    "tandem_cache_hit_ratio", "Hits / lookups of the process's result cache since it started.", ["backend"],
)
CACHE_BACKEND_UP = Gauge(
    "tandem_cache_backend_up",
    "1 while the result-cache backend answers, 0 while it is unreachable (searches then run uncached).",
    ["backend"],
)


class ResultCache(ABC):
    """A byte-valued cache of search results with TTLs and a fill lock against stampedes.

    Contract every backend keeps:

    * :meth:`get` returns the bytes stored under ``key`` or ``None``; it never raises for a
      backend failure (an unreachable backend is a miss) — the cache may make a search
      slower to compute, never fail.
    * :meth:`set` stores ``value`` for about ``ttl_s`` seconds (backends add jitter so that
      keys written together do not expire together); failures are swallowed.
    * :meth:`try_lock` / :meth:`unlock` form a short advisory lock per key: the caller that
      gets it computes the value, the others wait briefly for it instead of all computing it
      at once. The lock expires on its own after ``ttl_s`` so a crashed holder cannot wedge a
      key. When the backend is down :meth:`try_lock` returns ``True`` (compute; no waiting).
    """

    #: Backend name used in metrics.
    backend: str = "cache"
    #: Whether :meth:`get` may wait on I/O (a network round trip). An event loop may read a
    #: non-blocking cache itself instead of handing the lookup to a thread.
    blocking: bool = True

    def __init__(self, ttl_jitter: float = 0.1) -> None:
        if not 0 <= ttl_jitter < 1:
            raise InvalidInput(f"`ttl_jitter` must be in [0, 1), got {ttl_jitter}")
        self.ttl_jitter = ttl_jitter
        self.hits = 0
        self.misses = 0
        self.errors = 0
        CACHE_HIT_RATIO.labels(self.backend).set_function(self.hit_ratio)

    @abstractmethod
    def _get(self, key: str) -> bytes | None:
        """Backend lookup; may raise on backend failure (counted and turned into a miss)."""

    @abstractmethod
    def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store ``value`` under ``key`` for about ``ttl_s`` seconds (see the class contract)."""

    @abstractmethod
    def try_lock(self, key: str, ttl_s: float) -> bool:
        """Take the fill lock of ``key``; ``True`` when this caller should compute the value."""

    @abstractmethod
    def unlock(self, key: str) -> None:
        """Release a fill lock this caller holds (no-op when it expired or was never taken)."""

    def fill(self, key: str, value: bytes, ttl_s: float) -> None:
        """:meth:`set` then :meth:`unlock` — what the holder of a fill lock does with its result.

        Backends may do both in one round trip.
        """
        self.set(key, value, ttl_s)
        self.unlock(key)

    def get(self, key: str) -> bytes | None:
        """The cached bytes or ``None``; counts hits and misses for the hit-ratio metric."""
        try:
            value = self._get(key)
        except Exception:  # noqa: BLE001 - contract: a failing backend is a miss
            self.errors += 1
            self.misses += 1
            CACHE_LOOKUPS.labels(self.backend, "error").inc()
            return None
        if value is None:
            self.misses += 1
            CACHE_LOOKUPS.labels(self.backend, "miss").inc()
        else:
            self.hits += 1
            CACHE_LOOKUPS.labels(self.backend, "hit").inc()
        return value

    def hit_ratio(self) -> float:
        """Hits / lookups so far (0.0 before the first lookup)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def jittered(self, ttl_s: float) -> float:
        """``ttl_s`` scaled by a random factor in ``[1 - jitter, 1 + jitter]``."""
        if not ttl_s > 0:
            raise InvalidInput(f"`ttl_s` must be > 0, got {ttl_s}")
        return ttl_s * (1.0 + random.uniform(-self.ttl_jitter, self.ttl_jitter))

    def ping(self) -> bool:
        """Whether the backend answers now; never raises. Updates ``tandem_cache_backend_up``.

        In-process backends always answer; networked ones make one short round trip.
        """
        CACHE_BACKEND_UP.labels(self.backend).set(1.0)
        return True

    def describe(self) -> str:
        """Which cache this is, for logs (backend and address; never credentials)."""
        return self.backend

    def close(self) -> None:  # noqa: B027 (optional hook: most caches hold nothing to release)
        """Release connections. Idempotent."""
