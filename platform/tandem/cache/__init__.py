"""Result cache: in-process LRU (embedded default) or Redis, behind one interface."""

from __future__ import annotations

from tandem.cache.base import ResultCache
from tandem.cache.keys import cache_key, normalize_query
from tandem.cache.lru import LruCache


def make_cache(redis_url: str | None = None, max_entries: int = 10_000) -> ResultCache:
    """A :class:`RedisCache` for ``redis_url``, else the in-process :class:`LruCache`."""
    if redis_url:
        from tandem.cache.redis_cache import RedisCache

        return RedisCache(redis_url)
    return LruCache(max_entries=max_entries)


__all__ = ["LruCache", "ResultCache", "cache_key", "make_cache", "normalize_query"]
