"""Bounded requests: filter count and string lengths are capped (INVALID_ARGUMENT naming the
field, over the wire too), a deep request cannot widen the generative source's beam, and the
micro-batcher never mixes depths in one batch."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

import grpc
import pytest

from tandem.errors import InvalidInput
from tandem.retriever import Hit
from tandem.search.orchestrator import HybridSearcher
from tandem.search.request import FilterSpec, SearchConfig, SearchRequest, validate_request
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem_services.batching import MicroBatcher

ITEMS = tiny_catalog()
CONFIG = SearchConfig()


def test_at_most_16_filters() -> None:
    ok = tuple(FilterSpec("price", max=float(i)) for i in range(16))
    validate_request(SearchRequest("drill", filters=ok), CONFIG)
    with pytest.raises(InvalidInput, match=r"`filters` has 17 entries; the limit is 16"):
        validate_request(SearchRequest("drill", filters=(*ok, FilterSpec("brand", equals="x"))), CONFIG)


@pytest.mark.parametrize(("request_", "field"), [
    (SearchRequest("drill", filters=(FilterSpec("category", prefix="a" * 257),)), "filters[0].prefix"),
    (SearchRequest("drill", filters=(FilterSpec("brand", equals="b" * 300),)), "filters[0].equals"),
    (SearchRequest("drill", filters=(FilterSpec("x" * 10_000),)), "filters[0].field"),
    (SearchRequest("drill", user_id="u" * 257), "user_id"),
])
def test_strings_are_bounded(request_: SearchRequest, field: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(f"`{field}` is ") + r"\d+ characters"):
        validate_request(request_, CONFIG)


def test_a_filter_flood_over_grpc_is_invalid_argument_naming_the_field() -> None:
    from tandem_testing.fuzz_requests import fuzz_server
    from tandem.v1 import search_pb2

    flood = [search_pb2.Filter(field="brand", equals="Volta")] * 55_000  # ~1 MiB, issue 19's example
    with fuzz_server() as stub:
        with pytest.raises(grpc.RpcError) as err:
            stub.Search(search_pb2.SearchRequest(query="drill", filters=flood), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "`filters` has 55000 entries" in err.value.details()


class Recording(TermOverlapRetriever):
    def __init__(self, name: str) -> None:
        super().__init__(ITEMS, name=name)
        self.ks: list[int] = []

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        self.ks.append(k)
        return super().retrieve(queries, k)


def test_a_deep_request_does_not_deepen_the_generative_source() -> None:
    bm25, gen = Recording("bm25"), Recording("generative")
    searcher = HybridSearcher([bm25, gen])
    searcher.search(SearchRequest("drill", top_k=1000))
    searcher.search(SearchRequest("saw", top_k=5))
    assert bm25.ks == [1000, 100] and gen.ks == [100, 100]
    assert HybridSearcher([Recording("generative")], config=SearchConfig(source_depth={})).config.source_depth == {}


def test_a_config_at_depth_deepens_every_source_the_generative_one_included() -> None:
    """``tandem fusion train --candidates N`` and ``tandem eval --candidates N`` hand the fuser
    N hits of every source (before, the generative source stayed capped at 100)."""
    bm25, gen = Recording("bm25"), Recording("generative")
    HybridSearcher([bm25, gen], config=SearchConfig.at_depth(200)).search(SearchRequest("drill", top_k=10))
    assert bm25.ks == [200] and gen.ks == [200]
    with pytest.raises(InvalidInput, match="`candidates`"):
        SearchConfig.at_depth(0)


def test_the_generative_source_can_be_fused_at_its_own_depth() -> None:
    """``--generative-depth``: BM25 deep (cheap), the beam search at the depth it was fitted at."""
    bm25, gen = Recording("bm25"), Recording("generative")
    HybridSearcher([bm25, gen], config=SearchConfig.at_depth(200, 100)).search(SearchRequest("drill", top_k=10))
    assert bm25.ks == [200] and gen.ks == [100]
    with pytest.raises(InvalidInput, match="`generative_depth` must be >= 1, got 0"):
        SearchConfig.at_depth(200, 0)


def test_the_micro_batcher_groups_requests_by_depth() -> None:
    calls: list[tuple[int, int]] = []
    retriever = TermOverlapRetriever(ITEMS, name="generative")

    def fn(queries: list[str], k: int) -> list[list[Hit]]:
        calls.append((len(queries), k))
        return retriever.retrieve(queries, k)

    async def main() -> list[list[list[Hit]]]:
        batcher = MicroBatcher(fn, max_batch=8, max_wait_s=0.02)
        ks = [10, 1000, 10, 10, 1000, 10]
        out = await asyncio.gather(*[batcher.submit(["drill"], k) for k in ks])
        await batcher.close()
        return out

    out = asyncio.run(main())
    assert sorted(calls) == [(2, 1000), (4, 10)]  # one batch per depth, never k=1000 for the k=10 queries
    assert all(len(res) == 1 for res in out)


# --------------------------------------------------------------------------- memory and concurrency


def test_the_result_cache_is_bounded_in_bytes() -> None:
    from tandem.cache.lru import LruCache

    c = LruCache(max_entries=10_000, max_bytes=1_000_000)
    debug_sized = b"x" * 400_000  # a debug response, issue 19
    for i in range(10):
        c.set(f"k{i}", debug_sized, 60)
    assert len(c) == 2 and c.bytes <= 1_000_000
    assert c.get("k9") == debug_sized and c.get("k0") is None
    c.set("huge", b"y" * 2_000_000, 60)  # larger than the whole bound: not stored, nothing evicted
    assert c.get("huge") is None and len(c) == 2
    c.set("k9", b"small", 60)  # replacing an entry releases its bytes
    assert c.bytes == len("k8") + 400_000 + len("k9") + 5


def test_every_server_caps_concurrent_calls() -> None:
    import threading

    from tandem.search.request import SearchConfig
    from tandem.v1 import search_pb2, search_pb2_grpc
    from tandem_services.app import gateway_server
    from tandem_services.runner import BackgroundServer
    from tandem_services.server import ServerOptions

    slow = TermOverlapRetriever(ITEMS, name="bm25", delay_s=0.5)
    searcher = HybridSearcher([slow], config=SearchConfig(deadline_s=5))
    opts = ServerOptions(drain_s=0, grace_s=0.5, max_concurrent_rpcs=1)
    codes: list[grpc.StatusCode] = []
    with BackgroundServer(lambda: gateway_server(searcher, opts)) as srv:
        with grpc.insecure_channel(srv.address) as ch:
            stub = search_pb2_grpc.SearchServiceStub(ch)

            def call(q: str) -> None:
                try:
                    stub.Search(search_pb2.SearchRequest(query=q), timeout=5)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())

            threads = [threading.Thread(target=call, args=(q,)) for q in ("drill", "saw", "hammer")]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    assert codes.count(grpc.StatusCode.OK) >= 1
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes


def test_an_intent_outage_degrades_to_the_whole_query() -> None:
    from tandem.errors import Unavailable
    from tandem.intent.base import Intent, IntentDecomposer

    class Down(IntentDecomposer):
        def decompose(self, query: str) -> list[Intent]:
            raise Unavailable("intent service: connection refused")

    searcher = HybridSearcher([TermOverlapRetriever(ITEMS, name="bm25")], intents=Down())
    result = searcher.search(SearchRequest("cordless drill", top_k=3))
    assert result.hits and result.degraded and result.degraded_reasons[0].startswith("intents: Unavailable")
    assert [i.text for i in result.intents] == ["cordless drill"]
