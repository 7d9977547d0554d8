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
from tandem.search import FilterSpec, HybridSearcher, SearchConfig, SearchRequest, validate_request
from tandem.testing.term_overlap import TermOverlapRetriever
from tandem.testing.tiny_catalog import tiny_catalog
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
    from tandem.testing.fuzz import fuzz_server
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
