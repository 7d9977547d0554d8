"""In-process LRU result cache — the embedded default (no Redis needed)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from tandem.cache.base import ResultCache
from tandem.errors import InvalidInput


DEFAULT_MAX_BYTES = 128 << 20
"""Default byte bound of the in-process cache: an eighth of the gateway's 1 GiB memory limit."""


class LruCache(ResultCache):
    """A bounded, thread-safe LRU with per-entry expiry and in-process fill locks.

    ``max_entries`` and ``max_bytes`` (keys plus values) bound memory; the least recently used
    entry goes first, and a value larger than ``max_bytes`` on its own is not stored. Entries
    vary a lot in size (a ``debug`` result is ~0.4 MB, a plain one a few kB), so the entry count
    alone does not bound the memory. Expired entries are dropped when read (and crowded out by
    the LRU bounds otherwise).
    """

    backend = "lru"
    blocking = False

    def __init__(self, max_entries: int = 10_000, ttl_jitter: float = 0.1, clock=time.monotonic, *,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_entries < 1:
            raise InvalidInput(f"`max_entries` must be >= 1, got {max_entries}")
        if max_bytes < 1:
            raise InvalidInput(f"`max_bytes` must be >= 1, got {max_bytes}")
        super().__init__(ttl_jitter=ttl_jitter)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0  # keys + values held now
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
                self._drop(key)
                return None
            self._data.move_to_end(key)
            return value

    def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store ``value``; evicts the least recently used entries beyond ``max_entries`` or
        ``max_bytes``. A value that alone exceeds ``max_bytes`` is not stored (nor kept stale)."""
        expires = self._clock() + self.jittered(ttl_s)
        size = len(key) + len(value)
        with self._mu:
            self._drop(key)
            if size > self.max_bytes:
                return
            self._data[key] = (expires, value)
            self.bytes += size
            while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
                old_key, (_, old_value) = self._data.popitem(last=False)
                self.bytes -= len(old_key) + len(old_value)

    def _drop(self, key: str) -> None:
        """Remove ``key`` if present, keeping :attr:`bytes` right (caller holds the lock)."""
        entry = self._data.pop(key, None)
        if entry is not None:
            self.bytes -= len(key) + len(entry[1])

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

    def describe(self) -> str:
        """``in-process lru (max N entries)``."""
        return f"in-process lru (max {self.max_entries} entries)"

    def __len__(self) -> int:
        with self._mu:
            return len(self._data)
