"""The searcher's result cache front: keys, the fill lock, stampede waits and memoised decoding.

:class:`ResultMemo` is everything the hybrid searcher does with its
:class:`~tandem.cache.ResultCache`, including the gateway's fast path: with an in-process
(non-blocking) cache, :meth:`ResultMemo.peek` answers a hit on the event loop, and a miss
comes back as a :class:`CacheMiss` that remembers the read already happened, so computing
it neither reads the cache again nor counts the miss twice.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Any

from tandem.cache import ResultCache
from tandem.errors import InvalidInput
from tandem.search.request import SearchConfig, SearchRequest
from tandem.search.results import SearchResult


class RecentMemo:
    """A small, thread-safe, bounded map of recently derived values (least recently used out).

    Used to skip re-deriving the same thing for hot cache entries: decoding a cached result,
    building its response message.
    """

    def __init__(self, size: int = 1024) -> None:
        if size < 1:
            raise InvalidInput(f"`size` must be >= 1, got {size}")
        self._size = size
        self._items: OrderedDict[Hashable, tuple[Any, Any]] = OrderedDict()
        self._mu = threading.Lock()

    def get(self, key: Hashable, source: Any) -> Any | None:
        """The value derived from ``source`` under ``key``; ``None`` if absent or derived from
        other data (``source`` neither the same object nor equal)."""
        with self._mu:
            hit = self._items.get(key)
            if hit is None or not (hit[0] is source or hit[0] == source):
                return None
            self._items.move_to_end(key)
            return hit[1]

    def put(self, key: Hashable, source: Any, value: Any) -> None:
        """Remember ``value`` as derived from ``source``."""
        with self._mu:
            self._items[key] = (source, value)
            self._items.move_to_end(key)
            if len(self._items) > self._size:
                self._items.popitem(last=False)


@dataclass(frozen=True, slots=True)
class CacheMiss:
    """A validated request the cache has not answered: its normalised query, ``top_k``, the
    versions and cache key it was derived with. ``looked_up``: the cache was already read for
    it (and the miss counted), so computing it goes straight to the fill lock."""

    request: SearchRequest
    query: str
    top_k: int
    versions: dict[str, str]
    key: str
    looked_up: bool = False


class ResultMemo:
    """The result cache as the searcher uses it (``cache`` ``None``: every call is a miss)."""

    def __init__(self, cache: ResultCache | None, config: SearchConfig) -> None:
        self.cache = cache
        self.config = config
        self._decoded = RecentMemo()

    @property
    def local(self) -> bool:
        """Whether a read cannot block (an in-process cache): cheap enough for an event loop."""
        return self.cache is not None and not self.cache.blocking

    def peek(self, miss: CacheMiss, started: float) -> SearchResult | CacheMiss:
        """One read of a local cache, no lock, no wait: the hit (``cache_hit``, ``took_ms``
        since ``started``), or ``miss`` marked as looked up. Without a local cache, ``miss``
        unread (the read then happens, off the event loop, when it is computed)."""
        if not self.local:
            return miss
        result = self._get(miss.key)
        if result is None:
            return replace(miss, looked_up=True)
        result.cache_hit = True
        result.took_ms = (time.monotonic() - started) * 1000
        return result

    def claim(self, miss: CacheMiss, deadline: float) -> tuple[SearchResult | None, bool]:
        """Before computing ``miss``: a result that appeared meanwhile (read unless already
        looked up, or filled by a concurrent caller holding the fill lock), else ``None`` and
        whether this caller holds the lock (then :meth:`store` or :meth:`release` must follow)."""
        if self.cache is None:
            return None, False
        # An empty in-process cache (false by its length) cannot hit: it is not read.
        result = None if miss.looked_up or not self.cache else self._get(miss.key)
        if result is not None:
            return result, False
        if self.cache.try_lock(miss.key, self.config.lock_ttl_s):
            return None, True
        return self._wait_for_fill(miss.key, deadline), False

    def store(self, key: str, result: SearchResult, locked: bool) -> None:
        """Cache a computed ``result``; a degraded one is not cached, so recovery shows at once."""
        if self.cache is None:
            return
        if result.degraded:
            self.release(key, locked)
        elif locked:
            self.cache.fill(key, result.to_bytes(), self.config.cache_ttl_s)
        else:
            self.cache.set(key, result.to_bytes(), self.config.cache_ttl_s)

    def release(self, key: str, locked: bool) -> None:
        """Give the fill lock back without a result (the computation failed)."""
        if locked and self.cache is not None:
            self.cache.unlock(key)

    def _get(self, key: str) -> SearchResult | None:
        """The cached result under ``key``: a fresh shallow copy, so callers may set
        ``cache_hit``/``took_ms``; its hits and lists are shared with other hits of the entry
        (hot entries are decoded once, see :class:`RecentMemo`) and must not be mutated."""
        assert self.cache is not None
        data = self.cache.get(key)
        if data is None:
            return None
        result = self._decoded.get(key, data)
        if result is None:
            try:
                result = SearchResult.from_bytes(data)
            except (ValueError, KeyError, TypeError):  # an entry from an incompatible writer: recompute
                return None
            self._decoded.put(key, data, result)
        return replace(result)

    def _wait_for_fill(self, key: str, deadline: float) -> SearchResult | None:
        """Another caller is computing this key: poll briefly for its result."""
        until = min(deadline - self.config.reserve_s, time.monotonic() + self.config.stampede_wait_s)
        while time.monotonic() < until:
            time.sleep(0.002)
            result = self._get(key)
            if result is not None:
                return result
        return None


__all__ = ["CacheMiss", "RecentMemo", "ResultMemo"]
