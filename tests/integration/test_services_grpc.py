"""Real gRPC servers on free loopback ports: a gateway over remote retriever services.

The "bm25" and "generative" sources here are :class:`TermOverlapRetriever` instances (a real
in-process TF-IDF retriever) served by ``RetrieverService``; the Lucene-backed variant is
``test_services_sparse.py``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tandem.cache import LruCache, make_cache
from tandem.search.catalog import InMemoryCatalog
from tandem.search.orchestrator import HybridSearcher
from tandem.search.request import FilterSpec, SearchConfig
from tandem_testing.infra import RedisServer
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.v1 import admin_pb2, admin_pb2_grpc, search_pb2
from tandem_services.app import BatchOptions, all_in_one_server, gateway_server, retriever_server
from tandem_services.client import ChannelOptions, RemoteRetriever, SearchClient
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions

pytestmark = pytest.mark.integration

ITEMS = tiny_catalog()
FAST = ServerOptions(drain_s=0.0, grace_s=1.0)


class Stack:
    """bm25 + generative retriever services and a gateway with a Redis cache."""

    def __init__(self, redis_url: str, gateway_options: ServerOptions = FAST, generative_delay_s: float = 0.0):
        self.bm25 = TermOverlapRetriever(ITEMS, name="bm25", version="idx-1")
        self.gen = TermOverlapRetriever(ITEMS, name="generative", version="model-1", delay_s=generative_delay_s)
        self.sparse_srv = BackgroundServer(lambda: retriever_server([self.bm25], FAST))
        self.gen_srv = BackgroundServer(lambda: retriever_server([self.gen], FAST, batch=BatchOptions(max_wait_ms=2)))
        self.sparse_srv.start()
        self.gen_srv.start()
        self.cache = make_cache(redis_url)
        self.searcher = HybridSearcher(
            [RemoteRetriever(self.sparse_srv.address, "bm25", version_ttl_s=0.05),
             RemoteRetriever(self.gen_srv.address, "generative", version_ttl_s=0.05)],
            cache=self.cache, catalog=InMemoryCatalog(ITEMS), config=SearchConfig(deadline_s=1.0),
        )
        self.gateway = BackgroundServer(lambda: gateway_server(self.searcher, gateway_options))
        self.gateway.start()

    def close(self) -> None:
        for srv in (self.gateway, self.gen_srv, self.sparse_srv):
            srv.stop()
        self.cache.close()


@pytest.fixture
def stack(redis_url: str) -> Iterator[Stack]:
    s = Stack(redis_url)
    yield s
    s.close()


def unique(q: str) -> str:
    """Queries differ per test run so a shared Redis never serves an earlier run's entry."""
    return f"{q} {time.monotonic_ns()}"


def test_fused_results_carry_provenance_and_versions(stack: Stack) -> None:
    with SearchClient(stack.gateway.address) as client:
        r = client.search(unique("cordless drill"), top_k=5, debug=True)
    assert len(r.hits) == 5 and not r.degraded and not r.cache_hit
    assert r.hits[0].item_id == "t01" and r.hits[0].title.startswith("Cordless Drill")
    assert {p.source for p in r.hits[0].provenance} == {"bm25", "generative"}
    assert all(p.rank >= 1 for h in r.hits for p in h.provenance)
    assert dict(r.versions)["bm25"] == "idx-1" and dict(r.versions)["generative"] == "model-1"
    assert [i.text for i in r.intents] and {d.source for d in r.debug_lists} == {"bm25", "generative"}
    assert r.took_ms > 0


def test_repeated_query_is_a_cache_hit(stack: Stack) -> None:
    q = unique("garden hose")
    with SearchClient(stack.gateway.address) as client:
        first = client.search(q, top_k=3)
        second = client.search(q, top_k=3)
    assert not first.cache_hit and second.cache_hit
    assert [h.item_id for h in second.hits] == [h.item_id for h in first.hits]
    assert stack.cache.backend == "redis" and stack.cache.hits >= 1


def test_version_change_means_new_cache_keys(stack: Stack) -> None:
    q = unique("led light")
    with SearchClient(stack.gateway.address) as client:
        client.search(q)
        assert client.search(q).cache_hit
        stack.gen.set_version("model-2")  # the generative service picked up a new adapter
        # The gateway polls versions every version_ttl_s (0.05 s) off the request path; the
        # first answer under the new version must be computed afresh, not served from cache.
        until = time.monotonic() + 5
        r = client.search(q)
        while dict(r.versions)["generative"] != "model-2" and time.monotonic() < until:
            time.sleep(0.02)
            r = client.search(q)
        assert dict(r.versions)["generative"] == "model-2"
        assert not r.cache_hit
        assert client.search(q).cache_hit


def test_redis_stopped_mid_test_searches_still_succeed() -> None:
    with RedisServer() as redis_server:
        stack = Stack(redis_server.url)
        try:
            with SearchClient(stack.gateway.address) as client:
                q = unique("paint roller")
                client.search(q)
                assert client.search(q).cache_hit
                redis_server.kill()
                started = time.perf_counter()
                for i in range(20):
                    r = client.search(f"{q} {i}", timeout_s=2)
                    assert r.hits and not r.cache_hit and not r.degraded
                took = (time.perf_counter() - started) / 20
                assert stack.cache.breaker.state in ("open", "half-open")
                assert took < 0.1, f"{took * 1000:.1f} ms per search with Redis down"
                redis_server.restart()  # empty after restart: a miss, then hits again
                stack.cache.breaker.record_success()
                client.search(q)
                assert client.search(q).cache_hit
        finally:
            stack.close()


def test_generative_server_stopped_degrades_to_bm25_within_deadline(stack: Stack) -> None:
    stack.gen_srv.stop()
    with SearchClient(stack.gateway.address) as client:
        started = time.monotonic()
        r = client.search(unique("cordless drill"), timeout_s=0.5)
        took = time.monotonic() - started
    assert took < 0.5
    assert r.degraded and r.hits and r.degraded_reasons[0].startswith("generative")
    assert all([p.source for p in h.provenance] == ["bm25"] for h in r.hits)


def test_slow_generative_degrades_within_the_client_deadline(redis_url: str) -> None:
    s = Stack(redis_url, generative_delay_s=1.0)
    try:
        with SearchClient(s.gateway.address) as client:
            started = time.monotonic()
            r = client.search(unique("cordless drill"), timeout_s=0.3)
            assert time.monotonic() - started < 0.3
        assert r.degraded and "generative" in r.degraded_reasons[0] and r.hits
    finally:
        s.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"query": ""}, "`query`"),
        ({"query": "drill", "top_k": 0}, "`top_k`"),
        ({"query": "drill", "top_k": 100_000}, "`top_k`"),
        ({"query": "x" * 100_000}, "`query`"),
        ({"query": "drill", "filters": [FilterSpec("price", min=100.0, max=10.0)]}, "`filters[0].min`"),
        ({"query": "drill", "filters": [FilterSpec("colour", equals="red")]}, "`filters[0].field`"),
    ],
)
def test_bad_inputs_are_invalid_argument_naming_the_field(stack: Stack, kwargs: dict, field: str) -> None:
    with SearchClient(stack.gateway.address) as client, pytest.raises(grpc.RpcError) as err:
        client.search(**kwargs)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()


def test_filters_over_the_wire(stack: Stack) -> None:
    with SearchClient(stack.gateway.address) as client:
        r = client.search(unique("cordless"), filters=[FilterSpec("price", max=150.0),
                                                        FilterSpec("category", prefix="Tools")])
    by_id = {i.item_id: i for i in ITEMS}
    assert r.hits and all(by_id[h.item_id].price <= 150 and by_id[h.item_id].category[0] == "Tools" for h in r.hits)


def test_oversized_messages_are_rejected(stack: Stack) -> None:
    with SearchClient(stack.gateway.address, ChannelOptions(max_message_bytes=8 << 20)) as client, \
            pytest.raises(grpc.RpcError) as err:
        client.search("x" * (2 << 20))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_auth_on_the_gateway(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("gw-token\n")
    searcher = HybridSearcher([TermOverlapRetriever(ITEMS, name="bm25")], cache=LruCache())
    with BackgroundServer(lambda: gateway_server(searcher, ServerOptions(drain_s=0, auth_token_file=tokens))) as gw:
        for token in (None, "nope"):
            with SearchClient(gw.address, ChannelOptions(token=token)) as client, pytest.raises(grpc.RpcError) as err:
                client.search("drill")
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with SearchClient(gw.address, ChannelOptions(token="gw-token")) as client:
            assert client.search("drill").hits


def test_health_flips_to_not_serving_while_draining_in_flight_calls() -> None:
    slow = TermOverlapRetriever(ITEMS, name="bm25", delay_s=0.6)
    searcher = HybridSearcher([slow], config=SearchConfig(deadline_s=5.0))
    srv = BackgroundServer(lambda: gateway_server(searcher, ServerOptions(drain_s=0.5, grace_s=5.0)))
    srv.start()
    channel = grpc.insecure_channel(srv.address)
    health = health_pb2_grpc.HealthStub(channel)
    check = health_pb2.HealthCheckRequest(service="tandem.v1.SearchService")
    assert health.Check(check, timeout=2).status == health_pb2.HealthCheckResponse.SERVING
    with SearchClient(srv.address) as client:
        in_flight = client._stub.Search.future(search_pb2.SearchRequest(query="toilet"), timeout=5)
        time.sleep(0.1)
        stopping = srv.stop_async()
        time.sleep(0.1)
        assert health.Check(check, timeout=2).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert in_flight.result().hits[0].item_id == "t23"  # drained, not cut off
    stopping.result(timeout=10)
    srv.stop()
    channel.close()


class Reloadable(TermOverlapRetriever):
    """Reload = pick up the next model version (as a new adapter would be)."""

    def reload(self) -> None:
        self.set_version(str(int(self.version()) + 1))


def test_all_in_one_serves_every_service_with_reflection_and_admin() -> None:
    gen = Reloadable(ITEMS, name="generative")
    searcher = HybridSearcher([TermOverlapRetriever(ITEMS, name="bm25"), gen], catalog=InMemoryCatalog(ITEMS))
    build = lambda: all_in_one_server(searcher, FAST, batch=BatchOptions(), batched=["generative"])  # noqa: E731
    with BackgroundServer(build) as srv:
        with SearchClient(srv.address) as client:
            r = client.search("kitchen faucet", top_k=2)
        assert r.hits[0].item_id == "t21"
        remote_gen = RemoteRetriever(srv.address, "generative", source="generative")
        assert remote_gen.retrieve(["kitchen faucet"], 2)[0][0].item_id == "t21"
        assert remote_gen.version() == "1"
        remote_gen.close()
        with grpc.insecure_channel(srv.address) as ch:
            admin = admin_pb2_grpc.AdminServiceStub(ch)
            assert dict(admin.Versions(admin_pb2.VersionsRequest(), timeout=2).versions)["generative"] == "1"
            reloaded = admin.Reload(admin_pb2.ReloadRequest(sources=["generative"]), timeout=2)
            assert list(reloaded.reloaded) == ["generative"] and reloaded.versions["generative"] == "2"
            with pytest.raises(grpc.RpcError) as err:
                admin.Reload(admin_pb2.ReloadRequest(sources=["nope"]), timeout=2)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "`sources`" in err.value.details()
            refl = reflection_pb2_grpc.ServerReflectionStub(ch)
            reply = next(refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
            names = {s.name for s in reply.list_services_response.service}
        assert {"tandem.v1.SearchService", "tandem.v1.RetrieverService", "tandem.v1.IntentService",
                "tandem.v1.AdminService", "grpc.health.v1.Health"} <= names
        assert gen.calls >= 1


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for localhost and a client certificate, made with openssl."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=tandem-test-ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for name, cn in (("server", "localhost"), ("client", "tandem-client")):
        ext = d / f"{name}.ext"
        ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n" if name == "server"
                       else "extendedKeyUsage=clientAuth\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                 "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(d / f"{name}.pem"))
    return d


def test_mutual_tls(pki: Path) -> None:
    opts = ServerOptions(drain_s=0, tls_cert=pki / "server.pem", tls_key=pki / "server.key",
                         tls_client_ca=pki / "ca.pem")
    with BackgroundServer(lambda: retriever_server([TermOverlapRetriever(ITEMS, name="bm25")], opts)) as srv:
        good = ChannelOptions(tls_ca=pki / "ca.pem", client_cert=pki / "client.pem", client_key=pki / "client.key")
        assert RemoteRetriever(srv.address, "bm25", options=good).retrieve(["claw hammer"], 1)[0][0].item_id == "t09"
        for bad in (ChannelOptions(tls_ca=pki / "ca.pem"), ChannelOptions()):  # no client cert; plaintext
            with pytest.raises(Exception, match="UNAVAILABLE"):
                RemoteRetriever(srv.address, "bm25", options=bad, timeout_s=2).retrieve(["hammer"], 1)
