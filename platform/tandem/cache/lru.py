"""In-process LRU result cache — the embedded default (no Redis needed)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from tandem.cache.base import ResultCache
from tandem.errors import InvalidInput


class LruCache(ResultCache):
    """A bounded, thread-safe LRU with per-entry expiry and in-process fill locks.

    ``max_entries`` bounds memory; the least recently used entry goes first. Expired entries
    are dropped when read (and crowded out by the LRU bound otherwise).
    """

    backend = "lru"
    blocking = False

    def __init__(self, max_entries: int = 10_000, ttl_jitter: float = 0.1, clock=time.monotonic) -> None:
        if max_entries < 1:
            raise InvalidInput(f"`max_entries` must be >= 1, got {max_entries}")
        super().__init__(ttl_jitter=ttl_jitter)
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._locks: dict[str, float] = {}
        self._mu = threading.Lock()

    def _get(self, key: str) -> bytes | None:
        with self._mu:
            entry = self._data.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires <= self._clock():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return value

    def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store ``value``; evicts the least recently used entries beyond ``max_entries``."""
        expires = self._clock() + self.jittered(ttl_s)
        with self._mu:
            self._data[key] = (expires, value)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def try_lock(self, key: str, ttl_s: float) -> bool:
        """Take the fill lock unless another caller holds an unexpired one."""
        now = self._clock()
        with self._mu:
            held_until = self._locks.get(key)
            if held_until is not None and held_until > now:
                return False
            self._locks[key] = now + ttl_s
            return True

    def unlock(self, key: str) -> None:
        """Release the fill lock of ``key``."""
        with self._mu:
            self._locks.pop(key, None)

    def __len__(self) -> int:
        with self._mu:
            return len(self._data)
