"""The Retriever contract for the retrievers this module serves or speaks (in-process, over
gRPC, serialised), RemoteIntents, and ``tandem search --server`` against a real server."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from typer.testing import CliRunner

from tandem.errors import InvalidInput
from tandem.intent.base import Intent, IntentDecomposer
from tandem.retriever import Retriever
from tandem.search.catalog import InMemoryCatalog
from tandem.search.orchestrator import HybridSearcher
from tandem.search.request import SearchRequest
from tandem.search.sources import SerializedRetriever
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem_services.app import BatchOptions, all_in_one_server, intent_server
from tandem_services.client import RemoteIntents, RemoteRetriever, SearchClient
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions

ITEMS = tiny_catalog()
FAST = ServerOptions(drain_s=0, grace_s=0.5)


@pytest.fixture(scope="module")
def all_in_one() -> Iterator[BackgroundServer]:
    searcher = HybridSearcher(
        [TermOverlapRetriever(ITEMS, name="bm25"), TermOverlapRetriever(ITEMS, name="generative")],
        catalog=InMemoryCatalog(ITEMS))
    with BackgroundServer(lambda: all_in_one_server(searcher, FAST, batch=BatchOptions(max_wait_ms=1),
                                                    batched=["generative"])) as srv:
        yield srv


@pytest.fixture(params=["in-process", "remote", "remote-batched", "serialized"])
def retriever(request: pytest.FixtureRequest, all_in_one: BackgroundServer) -> Iterator[Retriever]:
    if request.param == "in-process":
        yield TermOverlapRetriever(ITEMS, name="bm25")
    elif request.param == "serialized":
        yield SerializedRetriever(TermOverlapRetriever(ITEMS, name="bm25"))
    else:
        source = "generative" if request.param == "remote-batched" else "bm25"
        r = RemoteRetriever(all_in_one.address, source, source=source, timeout_s=5)
        yield r
        r.close()


def test_retriever_contract(retriever: Retriever) -> None:
    queries = ["cordless drill", "zzzz-nothing-matches", "paint", "cordless drill"]
    results = retriever.retrieve(queries, k=4)
    assert len(results) == len(queries)
    assert results[1] == []
    assert results[0] == results[3] and results[0][0].item_id == "t01"
    for hits in results:
        assert len(hits) <= 4
        assert len({h.item_id for h in hits}) == len(hits)
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
        assert all(h.source == retriever.name for h in hits)
    assert isinstance(retriever.version(), str) and retriever.version()
    for bad_queries, k, field in ((["drill"], 0, "`k`"), (["  "], 3, "`queries[0]`"), ("drill", 3, "`queries`")):
        with pytest.raises(InvalidInput, match=field.replace("[", r"\[").replace("]", r"\]")):
            retriever.retrieve(bad_queries, k)


def test_remote_server_validates_too(all_in_one: BackgroundServer) -> None:
    """The server does not rely on clients validating (a RemoteRetriever checks locally first)."""
    from tandem.v1 import retriever_pb2, retriever_pb2_grpc

    with grpc.insecure_channel(all_in_one.address) as ch:
        stub = retriever_pb2_grpc.RetrieverServiceStub(ch)
        for req, field in ((retriever_pb2.RetrieveRequest(queries=["x"], k=3), "`source`"),
                           (retriever_pb2.RetrieveRequest(queries=["x"], k=3, source="nope"), "`source`"),
                           (retriever_pb2.RetrieveRequest(k=3, source="bm25"), "`queries`"),
                           (retriever_pb2.RetrieveRequest(queries=["x" * 5000], k=3, source="bm25"), "`queries[0]`")):
            with pytest.raises(grpc.RpcError) as err:
                stub.Retrieve(req, timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in err.value.details()


def test_remote_intents_feed_the_searcher() -> None:
    class Words(IntentDecomposer):
        name = "words-v3"

        def decompose(self, query: str) -> list[Intent]:
            return [Intent(w, kind="word", weight=1.0) for w in query.split()]

    with BackgroundServer(lambda: intent_server(Words(), FAST)) as srv:
        intents = RemoteIntents(srv.address)
        searcher = HybridSearcher([TermOverlapRetriever(ITEMS, name="bm25")], intents=intents)
        r = searcher.search(SearchRequest("chrome faucet"))
        assert [i.text for i in r.intents] == ["chrome", "faucet"] and intents.version() == "words-v3"
        with pytest.raises(InvalidInput, match="`query`"):
            intents.decompose("   ")


def test_search_cli_against_a_running_gateway(all_in_one: BackgroundServer) -> None:
    from tandem_app.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["search", "kitchen faucet", "--server", all_in_one.address, "-k", "3"])
    assert out.exit_code == 0, out.output
    assert "t21" in out.output and "bm25#1" in out.output and "generative#1" in out.output
    assert "cache miss" in out.output
    bad = runner.invoke(app, ["search", "faucet", "--server", all_in_one.address,
                              "--price-min", "9", "--price-max", "1"])
    assert bad.exit_code == 1 and "INVALID_ARGUMENT" in bad.output and "`filters[0].min`" in bad.output


def test_serve_without_a_role_prints_help_and_fails() -> None:
    from tandem_app.cli import app

    out = CliRunner().invoke(app, ["serve"])
    assert out.exit_code == 2 and "--all-in-one" in out.output


def test_gateway_search_client_context(all_in_one: BackgroundServer) -> None:
    with SearchClient(all_in_one.address) as client:
        assert client.search("hose", top_k=1).hits[0].item_id == "t18"
