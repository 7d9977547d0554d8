"""Deleted and quarantined items never come back through the searcher (issue 19): a fused hit
whose item the live catalog does not know is dropped before ``top_k`` is cut, and counted; the
gateway's live catalog is the sparse service's ``Lookup`` RPC."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from tandem.errors import Unavailable
from tandem.retriever import Hit, Retriever
from tandem.search.catalog import InMemoryCatalog, ItemMeta
from tandem.search.catalog import UNKNOWN_HITS
from tandem.search.orchestrator import HybridSearcher
from tandem.search.request import FilterSpec, SearchRequest
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem_services.app import retriever_server
from tandem_services.remote_catalog import RemoteCatalog
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions

ITEMS = tiny_catalog()
LIVE = [it for it in ITEMS if it.item_id != "t01"]  # t01 was deleted; the generative model still knows it


class Remembers(Retriever):
    """A generative source that still returns a retired item first, then the catalog's drills."""

    name = "generative"

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        ids = ["t01", "t02", "t03", "t04", "t05"][:k]
        return [[Hit(i, 1.0 / (n + 1), self.name) for n, i in enumerate(ids)] for _ in queries]


class DownCatalog:
    """A catalog whose backend is unreachable."""

    def lookup(self, item_ids: Sequence[str]) -> Mapping[str, ItemMeta]:
        raise Unavailable("catalog lookup at sparse:50052: UNAVAILABLE: connection refused")


def _searcher(catalog: Any) -> HybridSearcher:
    return HybridSearcher([TermOverlapRetriever(LIVE, name="bm25"), Remembers()], catalog=catalog)


def _dropped() -> float:
    return UNKNOWN_HITS.labels("generative")._value.get()


def test_a_hit_the_catalog_does_not_know_is_dropped_before_top_k() -> None:
    before = _dropped()
    result = HybridSearcher([Remembers()], catalog=InMemoryCatalog(LIVE)).search(SearchRequest("drill", top_k=3))
    ids = [h.item_id for h in result.hits]
    assert ids == ["t02", "t03", "t04"], "the retired first hit is gone and the next known one fills its place"
    assert all(h.title for h in result.hits)
    assert not result.degraded
    assert _dropped() == before + 1


def test_filters_see_only_known_items() -> None:
    result = _searcher(InMemoryCatalog(LIVE)).search(
        SearchRequest("cordless drill", top_k=5, filters=(FilterSpec("brand", equals="Volta"),)))
    assert [h.item_id for h in result.hits if h.item_id == "t01"] == []
    assert {h.item_id for h in result.hits} <= {"t02", "t05", "t07", "t19"}


def test_a_catalog_outage_keeps_the_hits_and_degrades() -> None:
    result = _searcher(DownCatalog()).search(SearchRequest("cordless drill", top_k=3))
    assert len(result.hits) == 3
    assert result.degraded and any(r.startswith("catalog: Unavailable") for r in result.degraded_reasons)


class Stored(TermOverlapRetriever):
    """A BM25 stand-in with stored fields, as ``SparseRetriever.documents`` gives them."""

    def __init__(self, items: list) -> None:
        super().__init__(items, name="bm25")
        self._docs = {it.item_id: {"title": it.title, "brand": it.brand, "price": it.price,
                                   "category": " > ".join(it.category)} for it in items}

    def documents(self, item_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {i: self._docs[i] for i in item_ids if i in self._docs}


@pytest.fixture(scope="module")
def sparse() -> Iterator[BackgroundServer]:
    with BackgroundServer(lambda: retriever_server([Stored(LIVE)], ServerOptions(drain_s=0, grace_s=0.5))) as srv:
        yield srv


def test_remote_catalog_gives_the_served_index_fields_and_leaves_out_retired_items(sparse: BackgroundServer) -> None:
    catalog = RemoteCatalog(sparse.address, timeout_s=5)
    try:
        got = catalog.lookup(["t02", "t01", "nope", "t14"])
        assert list(got) == ["t02", "t14"]
        assert got["t02"] == ItemMeta(title="Brushless Hammer Drill 18V", price=199.0,
                                      category=("Tools", "Power Tools", "Drills"), brand="Volta")
        assert catalog.lookup([]) == {}
        result = _searcher(catalog).search(SearchRequest("cordless drill", top_k=3))
        assert "t01" not in [h.item_id for h in result.hits] and len(result.hits) == 3
    finally:
        catalog.close()


def test_lookup_of_a_source_without_stored_fields_is_refused() -> None:
    with BackgroundServer(lambda: retriever_server([TermOverlapRetriever(LIVE, name="generative")],
                                                   ServerOptions(drain_s=0, grace_s=0.5))) as srv:
        catalog = RemoteCatalog(srv.address, timeout_s=5)
        try:
            with pytest.raises(Exception, match="stores no item fields"):
                catalog.lookup(["t02"])
        finally:
            catalog.close()
