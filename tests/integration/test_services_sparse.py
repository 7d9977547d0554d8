"""The gateway over the real Lucene BM25 service (Pyserini, JVM) plus a generative stand-in,
with a Redis cache: provenance, stored-field filters, live index updates changing cache keys,
and the BM25-only fallback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tandem.cache import make_cache
from tandem.catalog.item import Item
from tandem.search.catalog import StoredFieldsLookup
from tandem.search.orchestrator import HybridSearcher
from tandem.search.request import FilterSpec, SearchConfig
from tandem.search.sources import SerializedRetriever
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem_services.app import gateway_server, retriever_server
from tandem_services.client import RemoteRetriever, SearchClient
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions

pytestmark = pytest.mark.integration

FAST = ServerOptions(drain_s=0.0, grace_s=1.0)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tandem.jvm import ensure_jvm

    ensure_jvm()
    from tandem.sparse import build_index

    out = tmp_path_factory.mktemp("sparse") / "index"
    build_index(tiny_catalog(), out)
    return out


@pytest.fixture
def services(index_dir: Path, redis_url: str) -> Iterator[dict]:
    from tandem.sparse import SparseRetriever

    # Writable (the test upserts through it); serialised like the services do (see load_sparse).
    bm25 = SerializedRetriever(SparseRetriever(index_dir))
    gen = TermOverlapRetriever(tiny_catalog(), name="generative")
    sparse_srv = BackgroundServer(lambda: retriever_server([bm25], FAST))
    gen_srv = BackgroundServer(lambda: retriever_server([gen], FAST))
    sparse_srv.start(), gen_srv.start()
    cache = make_cache(redis_url)
    searcher = HybridSearcher(
        [RemoteRetriever(sparse_srv.address, "bm25", version_ttl_s=0.05),
         RemoteRetriever(gen_srv.address, "generative", version_ttl_s=0.05)],
        cache=cache, catalog=StoredFieldsLookup(bm25), config=SearchConfig(deadline_s=2.0),
    )
    gw = BackgroundServer(lambda: gateway_server(searcher, FAST))
    gw.start()
    yield {"bm25": bm25, "gateway": gw, "generative": gen_srv}
    for srv in (gw, gen_srv, sparse_srv):
        srv.stop()
    cache.close()


def test_hybrid_over_lucene_with_provenance_and_filters(services: dict) -> None:
    with SearchClient(services["gateway"].address) as client:
        r = client.search(f"cordless drill {time.monotonic_ns()}", top_k=5)
        assert r.hits[0].item_id == "t01" and r.hits[0].title == "Cordless Drill 20V Lithium-Ion Kit"
        assert {p.source for p in r.hits[0].provenance} == {"bm25", "generative"}
        assert not r.degraded and dict(r.versions)["bm25"]
        cheap = client.search("drill", top_k=10, filters=[FilterSpec("price", max=100.0),
                                                           FilterSpec("category", prefix="Tools/Power Tools")])
    assert [h.item_id for h in cheap.hits] == ["t03"]  # the only power-tool drill under $100


def test_live_upsert_changes_the_index_version_and_the_cache_key(services: dict) -> None:
    q = f"wheelbarrow {time.monotonic_ns()}"
    with SearchClient(services["gateway"].address) as client:
        before = client.search(q)
        assert client.search(q).cache_hit
        assert "t99" not in [h.item_id for h in before.hits]
        services["bm25"].upsert([Item(item_id="t99", title="Steel Wheelbarrow 6 cu. ft.", price=99.0)])
        time.sleep(0.1)  # > the gateway's version TTL
        after = client.search(q)
    assert not after.cache_hit and after.hits[0].item_id == "t99"
    assert dict(after.versions)["bm25"] != dict(before.versions)["bm25"]


def test_generative_down_falls_back_to_bm25(services: dict) -> None:
    services["generative"].stop()
    with SearchClient(services["gateway"].address) as client:
        started = time.monotonic()
        r = client.search(f"faucet {time.monotonic_ns()}", timeout_s=1.0)
    assert time.monotonic() - started < 1.0
    assert r.degraded and r.hits and all(p.source == "bm25" for h in r.hits for p in h.provenance)
