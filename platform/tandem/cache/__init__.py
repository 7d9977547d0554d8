"""Result cache: in-process LRU (embedded default) or Redis, behind one interface."""

from __future__ import annotations

import logging

from tandem.cache.base import ResultCache
from tandem.cache.keys import cache_key, normalize_query
from tandem.cache.lru import LruCache


log = logging.getLogger(__name__)


def make_cache(redis_url: str | None = None, max_entries: int = 10_000) -> ResultCache:
    """A :class:`RedisCache` for ``redis_url``, else the in-process :class:`LruCache`.

    Logs which one (a server's log then says where its results are cached).
    """
    cache: ResultCache
    if redis_url:
        from tandem.cache.redis_cache import RedisCache

        cache = RedisCache(redis_url)
    else:
        cache = LruCache(max_entries=max_entries)
    log.info("result cache: %s", cache.describe())
    return cache


__all__ = ["LruCache", "ResultCache", "cache_key", "make_cache", "normalize_query"]
