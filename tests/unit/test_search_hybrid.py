"""The hybrid query path in-process: validation, fusion with provenance, filters, deadlines,
degradation, caching, stampede protection and version-keyed cache entries."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from tandem.cache import LruCache
from tandem.errors import InvalidInput, Unavailable
from tandem.intent.base import Intent, IntentDecomposer
from tandem.retriever import Hit, Retriever
from tandem.search.catalog import InMemoryCatalog
from tandem.search.orchestrator import HybridSearcher
from tandem.search.request import FilterSpec, SearchConfig, SearchRequest
from tandem.search.results import SearchResult
from tandem.search.sources import SerializedRetriever
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog

ITEMS = tiny_catalog()


class Broken(Retriever):
    """A source whose backend is down."""

    name = "generative"

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        raise ConnectionError("model server unreachable")


def make(generative: Retriever | None = None, cache: bool = True, **config) -> HybridSearcher:
    sparse = TermOverlapRetriever(ITEMS, name="bm25")
    gen = generative or TermOverlapRetriever(ITEMS, name="generative")
    return HybridSearcher([sparse, gen], cache=LruCache() if cache else None, catalog=InMemoryCatalog(ITEMS),
                          config=SearchConfig(**config))


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (SearchRequest(query=""), "`query`"),
        (SearchRequest(query="   \t "), "`query`"),
        (SearchRequest(query="x" * 100_000), "`query`"),
        (SearchRequest(query="drill", top_k=0), "`top_k`"),
        (SearchRequest(query="drill", top_k=100_000), "`top_k`"),
        (SearchRequest(query="drill", filters=(FilterSpec("price", min=50, max=10),)), "`filters[0].min`"),
        (SearchRequest(query="drill", filters=(FilterSpec("price", min=-1),)), "`filters[0].min`"),
        (SearchRequest(query="drill", filters=(FilterSpec("price", max=float("nan")),)), "`filters[0].max`"),
        (SearchRequest(query="drill", filters=(FilterSpec("colour", equals="red"),)), "`filters[0].field`"),
        (SearchRequest(query="drill", filters=(FilterSpec("price", prefix="Tools"),)), "`filters[0]`"),
        (SearchRequest(query="drill", filters=(FilterSpec("category"),)), "`filters[0]`"),
        (SearchRequest(query="d", filters=(FilterSpec("brand", equals="x"), FilterSpec("category", prefix=" / "))),
         "`filters[1].prefix`"),
    ],
)
def test_bad_requests_name_the_field(request_: SearchRequest, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        make().search(request_)
    assert field in str(err.value)


def test_fused_hits_carry_provenance_titles_versions() -> None:
    r = make().search(SearchRequest("cordless drill", top_k=5))
    assert len(r.hits) == 5 and not r.degraded and not r.cache_hit
    top = r.hits[0]
    assert top.item_id == "t01" and top.title == "Cordless Drill 20V Lithium-Ion Kit"
    assert {p[0] for p in top.provenance} == {"bm25", "generative"}
    assert all(p[1] >= 1 for h in r.hits for p in h.provenance)
    assert r.versions == {"bm25": "1", "generative": "1", "intents": "whole-query", "fusion": "rrf:k=60:"}
    assert r.intents == [Intent("cordless drill")]
    assert r.took_ms > 0


def test_default_top_k_and_debug_lists() -> None:
    r = make().search(SearchRequest("paint", debug=True))
    assert len(r.hits) <= 10
    assert {s for s, _, _ in r.debug_lists} == {"bm25", "generative"}


def test_filters_use_catalog_metadata() -> None:
    s = make()
    cheap = s.search(SearchRequest("drill", filters=(FilterSpec("price", max=100.0),)))
    assert cheap.hits and all(ITEMS_BY_ID[h.item_id].price <= 100 for h in cheap.hits)
    assert "t02" not in [h.item_id for h in cheap.hits]  # the $199 hammer drill matches the text
    drills = s.search(SearchRequest("cordless", filters=(FilterSpec("category", prefix="tools/power tools"),)))
    assert drills.hits and all(ITEMS_BY_ID[h.item_id].category[:2] == ["Tools", "Power Tools"] for h in drills.hits)
    volta = s.search(SearchRequest("cordless", filters=(FilterSpec("brand", equals="VOLTA"),
                                                         FilterSpec("price", min=150.0))))
    assert {h.item_id for h in volta.hits} == {"t07"}


ITEMS_BY_ID = {i.item_id: i for i in ITEMS}


def test_failing_source_degrades_to_the_others() -> None:
    r = make(Broken()).search(SearchRequest("cordless drill"))
    assert r.degraded and r.hits
    assert r.degraded_reasons[0].startswith("generative: ConnectionError")
    assert all([p[0] for p in h.provenance] == ["bm25"] for h in r.hits)


def test_slow_source_is_dropped_within_the_deadline() -> None:
    slow = TermOverlapRetriever(ITEMS, name="generative", delay_s=0.5)
    s = make(slow)
    started = time.monotonic()
    r = s.search(SearchRequest("cordless drill"), deadline_s=0.1)
    assert time.monotonic() - started < 0.2
    assert r.degraded and "deadline" in r.degraded_reasons[0] and r.hits
    # A degraded result is not cached: once the source is fast again the full result shows.
    slow.delay_s = 0.0
    again = s.search(SearchRequest("cordless drill"), deadline_s=1.0)
    assert not again.degraded and not again.cache_hit


def test_no_source_answering_is_unavailable() -> None:
    class AlsoBroken(Broken):
        name = "bm25"

    s = HybridSearcher([AlsoBroken(), Broken()])
    with pytest.raises(Unavailable, match="no source answered"):
        s.search(SearchRequest("drill"))


def test_repeated_query_is_a_cache_hit_and_equal() -> None:
    s = make()
    first = s.search(SearchRequest("garden hose", top_k=3))
    second = s.search(SearchRequest("  garden   hose ", top_k=3))
    assert not first.cache_hit and second.cache_hit
    assert [(h.item_id, h.score, h.provenance) for h in second.hits] == \
        [(h.item_id, h.score, h.provenance) for h in first.hits]
    assert s.search(SearchRequest("garden hose", top_k=4)).cache_hit is False


def test_version_change_means_new_cache_keys() -> None:
    s = make()
    s.search(SearchRequest("led bulb"))
    assert s.search(SearchRequest("led bulb")).cache_hit
    s.retrievers[1].set_version("2")
    r = s.search(SearchRequest("led bulb"))
    assert not r.cache_hit and r.versions["generative"] == "2"
    assert s.search(SearchRequest("led bulb")).cache_hit


def test_concurrent_identical_misses_compute_once() -> None:
    sparse = TermOverlapRetriever(ITEMS, name="bm25", delay_s=0.1)
    s = HybridSearcher([sparse], cache=LruCache())
    results: list[SearchResult] = []
    threads = [threading.Thread(target=lambda: results.append(s.search(SearchRequest("toilet")))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sparse.calls == 1
    assert sum(r.cache_hit for r in results) == 5


def test_intents_are_a_pluggable_strategy() -> None:
    class SplitWords(IntentDecomposer):
        name = "split"

        def decompose(self, query: str) -> list[Intent]:
            return [Intent(w, kind="word", weight=0.5) for w in query.split()]

    sparse = TermOverlapRetriever(ITEMS, name="bm25")
    s = HybridSearcher([sparse], intents=SplitWords())
    r = s.search(SearchRequest("faucet chrome", debug=True))
    assert [i.text for i in r.intents] == ["faucet", "chrome"]
    assert sparse.batch_sizes == [2]  # one call per source, intents batched
    assert r.hits[0].item_id == "t22" and r.versions["intents"] == "split"


def test_result_round_trips_through_cache_bytes() -> None:
    r = make().search(SearchRequest("saw", debug=True))
    back = SearchResult.from_bytes(r.to_bytes())
    assert back == r


def test_filters_without_catalog_are_our_fault_not_the_clients() -> None:
    s = HybridSearcher([TermOverlapRetriever(ITEMS, name="bm25")])
    with pytest.raises(Unavailable, match="catalog"):
        s.search(SearchRequest("saw", filters=(FilterSpec("price", max=10.0),)))


def test_reload_calls_sources_that_support_it() -> None:
    class Reloadable(TermOverlapRetriever):
        def reload(self) -> None:
            self.set_version(str(int(self.version()) + 1))

    s = HybridSearcher([Reloadable(ITEMS, name="bm25"), TermOverlapRetriever(ITEMS, name="generative")])
    assert s.reload() == ["bm25"]
    assert s.versions()["bm25"] == "2"
    with pytest.raises(InvalidInput, match="`sources`"):
        s.reload(["nope"])


def test_serialized_retriever_never_overlaps_calls() -> None:
    class Probe(TermOverlapRetriever):
        active = 0
        peak = 0

        def retrieve(self, queries, k):
            Probe.active += 1
            Probe.peak = max(Probe.peak, Probe.active)
            time.sleep(0.005)
            Probe.active -= 1
            return super().retrieve(queries, k)

        def documents(self, ids):
            return {i: {"title": ITEMS_BY_ID[i].title} for i in ids if i in ITEMS_BY_ID}

    wrapped = SerializedRetriever(Probe(ITEMS, name="bm25"))
    threads = [threading.Thread(target=wrapped.retrieve, args=(["drill"], 3)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Probe.peak == 1 and wrapped.name == "bm25" and wrapped.version() == "1"
    assert wrapped.documents(["t01"])["t01"]["title"].startswith("Cordless")
