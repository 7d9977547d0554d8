"""The gateway's cache-hit fast path: prepare → lookup on the event loop, memoised decoding
and responses, and a miss counted once."""

from __future__ import annotations

import asyncio

import pytest

from tandem.cache import LruCache
from tandem.errors import InvalidInput
from tandem.search import HybridSearcher, InMemoryCatalog, RecentMemo, SearchRequest
from tandem.testing.term_overlap import TermOverlapRetriever
from tandem.testing.tiny_catalog import tiny_catalog
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


def test_lookup_misses_then_hits_with_independent_copies() -> None:
    s = _searcher()
    prepared = s.prepare(SearchRequest("garden hose", top_k=3))
    assert s.lookup(prepared) is None
    computed = s.search(prepared, looked_up=True)
    assert s.cache.misses == 1  # the lookup's miss is not counted again by search
    first, second = s.lookup(prepared), s.lookup(s.prepare(SearchRequest(" garden  hose", top_k=3)))
    assert first is not None and second is not None and first.cache_hit and second.cache_hit
    assert [h.item_id for h in first.hits] == [h.item_id for h in computed.hits]
    first.took_ms = 123.0
    assert second.took_ms != 123.0  # each hit is its own result object
    assert s.cache.hits == 2


def test_prepare_validates_like_search() -> None:
    with pytest.raises(InvalidInput, match="`top_k`"):
        _searcher().prepare(SearchRequest("drill", top_k=0))


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
