"""The gateway's cache-hit fast path: ``cached`` on the event loop (a hit, or a miss to compute),
memoised decoding and responses, and a miss counted once."""

from __future__ import annotations

import asyncio

import pytest

from tandem.cache import LruCache
from tandem.errors import InvalidInput
from tandem.search.catalog import InMemoryCatalog
from tandem.search.memo import CacheMiss, RecentMemo
from tandem.search.orchestrator import HybridSearcher
from tandem.search.request import SearchRequest
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.v1 import search_pb2
from tandem_services.servicers import SearchServicer

ITEMS = tiny_catalog()


class _Context:
    """The part of ``grpc.aio.ServicerContext`` the search servicer reads."""

    def time_remaining(self) -> float | None:
        return None


def _searcher() -> HybridSearcher:
    return HybridSearcher([TermOverlapRetriever(ITEMS, name="bm25")], cache=LruCache(),
                          catalog=InMemoryCatalog(ITEMS))


def test_cached_misses_then_hits_with_independent_copies() -> None:
    s = _searcher()
    miss = s.cached(SearchRequest("garden hose", top_k=3))
    assert isinstance(miss, CacheMiss) and miss.looked_up
    computed = s.search(miss)
    assert s.cache.misses == 1  # the fast path's miss is not counted again by search
    first, second = s.cached(SearchRequest("garden hose", top_k=3)), s.cached(SearchRequest(" garden  hose", top_k=3))
    assert not isinstance(first, CacheMiss) and not isinstance(second, CacheMiss)
    assert first.cache_hit and second.cache_hit
    assert [h.item_id for h in first.hits] == [h.item_id for h in computed.hits]
    first.took_ms = 123.0
    assert second.took_ms != 123.0  # each hit is its own result object
    assert s.cache.hits == 2


def test_cached_does_not_read_a_blocking_cache_or_none() -> None:
    """Without an in-process cache the fast path only validates: the read happens in ``search``."""
    class Blocking(LruCache):
        blocking = True

    for cache in (Blocking(), None):
        s = HybridSearcher([TermOverlapRetriever(ITEMS, name="bm25")], cache=cache, catalog=InMemoryCatalog(ITEMS))
        miss = s.cached(SearchRequest("garden hose", top_k=3))
        assert isinstance(miss, CacheMiss) and not miss.looked_up
        if cache is not None:
            assert cache.hits == cache.misses == 0
            s.search(miss)
            again = s.cached(SearchRequest("garden hose", top_k=3))
            assert isinstance(again, CacheMiss) and s.search(again).cache_hit


def test_cached_validates_like_search() -> None:
    with pytest.raises(InvalidInput, match="`top_k`"):
        _searcher().cached(SearchRequest("drill", top_k=0))


def test_recent_memo_checks_the_source_and_stays_bounded() -> None:
    memo = RecentMemo(size=2)
    memo.put("a", b"one", 1)
    assert memo.get("a", b"one") == 1 and memo.get("a", b"two") is None
    memo.put("b", b"x", 2)
    memo.get("a", b"one")  # a is now the most recent
    memo.put("c", b"y", 3)
    assert memo.get("b", b"x") is None and memo.get("a", b"one") == 1 and memo.get("c", b"y") == 3
    with pytest.raises(InvalidInput, match="`size`"):
        RecentMemo(size=0)


def test_servicer_hits_reuse_the_response_with_their_own_took_ms() -> None:
    servicer = SearchServicer(_searcher())
    request = search_pb2.SearchRequest(query="cordless drill", top_k=5)

    async def three() -> list[search_pb2.SearchResponse]:
        return [await servicer.Search(request, _Context()) for _ in range(3)]

    miss, hit1, hit2 = asyncio.run(three())
    assert not miss.cache_hit and hit1.cache_hit and hit2.cache_hit
    for hit in (hit1, hit2):
        assert [h.item_id for h in hit.hits] == [h.item_id for h in miss.hits]
        assert [list(h.provenance) for h in hit.hits] == [list(h.provenance) for h in miss.hits]
    hit1.took_ms = 999.0  # the caller owns its copy; the memoised template is untouched
    again = asyncio.run(servicer.Search(request, _Context()))
    assert again.cache_hit and again.took_ms != 999.0
