"""Interceptors on a real in-process gRPC server (port 0): error mapping, auth, metrics;
plus the micro-batcher and the proto conversions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from tandem.errors import InvalidInput, NotFound, Unavailable
from tandem.retriever import Hit, Retriever
from tandem.search.request import FilterSpec
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.v1 import retriever_pb2, retriever_pb2_grpc, search_pb2
from tandem_services.app import retriever_server
from tandem_services.batching import MicroBatcher
from tandem_services.convert import filter_from_proto, filter_to_proto, request_from_proto
from tandem_services.interceptors import load_tokens
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions
from grpc_health.v1 import health_pb2, health_pb2_grpc


class Faulty(Retriever):
    """Raises whatever the query names, to drive the error-mapping interceptor."""

    name = "faulty"

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        kind = queries[0]
        if kind == "missing":
            raise NotFound("no such index")
        if kind == "down":
            raise Unavailable("index is being rebuilt")
        if kind == "bug":
            raise KeyError("secret-internal-detail")
        return [[Hit("a", 1.0, self.name)] for _ in queries]


@pytest.fixture(scope="module")
def server():
    opts = ServerOptions(drain_s=0, grace_s=0.5)
    with BackgroundServer(lambda: retriever_server([Faulty()], opts)) as srv:
        yield srv


def call(address: str, query: str, k: int = 3, metadata=()) -> retriever_pb2.RetrieveResponse:
    with grpc.insecure_channel(address) as ch:
        stub = retriever_pb2_grpc.RetrieverServiceStub(ch)
        return stub.Retrieve(retriever_pb2.RetrieveRequest(queries=[query], k=k), timeout=5, metadata=metadata)


@pytest.mark.parametrize(
    ("query", "k", "code", "text"),
    [
        ("ok", 0, grpc.StatusCode.INVALID_ARGUMENT, "`k`"),
        ("ok", 5000, grpc.StatusCode.INVALID_ARGUMENT, "`k`"),
        ("  ", 3, grpc.StatusCode.INVALID_ARGUMENT, "`queries[0]`"),
        ("missing", 3, grpc.StatusCode.NOT_FOUND, "no such index"),
        ("down", 3, grpc.StatusCode.UNAVAILABLE, "rebuilt"),
    ],
)
def test_domain_errors_map_to_their_status(server, query: str, k: int, code: grpc.StatusCode, text: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call(server.address, query, k)
    assert err.value.code() == code
    assert text in err.value.details()


def test_internal_errors_do_not_leak(server) -> None:
    with pytest.raises(grpc.RpcError) as err:
        call(server.address, "bug")
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret-internal-detail" not in err.value.details()
    assert "Traceback" not in err.value.details() and "ref " in err.value.details()


def test_metrics_count_by_method_and_code(server) -> None:
    method = "/tandem.v1.RetrieverService/Retrieve"
    before = REGISTRY.get_sample_value("tandem_rpc_requests_total", {"method": method, "code": "OK"}) or 0
    bad = REGISTRY.get_sample_value("tandem_rpc_requests_total", {"method": method, "code": "INVALID_ARGUMENT"}) or 0
    assert call(server.address, "ok").results[0].hits[0].item_id == "a"
    with pytest.raises(grpc.RpcError):
        call(server.address, "ok", k=0)

    def settled(code: str, want: float) -> bool:
        # The server counts after the status has gone out, so the client can be a moment ahead.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if REGISTRY.get_sample_value("tandem_rpc_requests_total", {"method": method, "code": code}) == want:
                return True
            time.sleep(0.01)
        return False

    assert settled("OK", before + 1)
    assert settled("INVALID_ARGUMENT", bad + 1)


def test_bearer_token_auth(tmp_path, monkeypatch) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("# comment\ns3cret-a\n\n")
    monkeypatch.setenv("TANDEM_AUTH_TOKENS", "s3cret-b, ")
    assert load_tokens(token_file) == ["s3cret-a", "s3cret-b"]
    opts = ServerOptions(drain_s=0, grace_s=0.5, auth_token_file=token_file)
    items = tiny_catalog()
    with BackgroundServer(lambda: retriever_server([TermOverlapRetriever(items, name="bm25")], opts)) as srv:
        for md in [(), (("authorization", "Bearer wrong"),), (("authorization", "s3cret-a"),)]:
            with pytest.raises(grpc.RpcError) as err:
                call(srv.address, "drill", metadata=md)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for token in ("s3cret-a", "s3cret-b"):
            assert call(srv.address, "drill", metadata=(("authorization", f"Bearer {token}"),)).results[0].hits
        with grpc.insecure_channel(srv.address) as ch:  # probes need no token
            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_require_auth_without_tokens_refuses_to_start(monkeypatch) -> None:
    monkeypatch.delenv("TANDEM_AUTH_TOKENS", raising=False)
    srv = BackgroundServer(lambda: retriever_server([Faulty()], ServerOptions(require_auth=True)))
    with pytest.raises(InvalidInput, match="`require_auth`"):
        srv.start()
    srv._loop.call_soon_threadsafe(srv._loop.stop)


def test_tls_options_must_come_in_pairs(tmp_path) -> None:
    with pytest.raises(ValueError, match="`tls_cert`"):  # pydantic wraps it in a ValidationError
        ServerOptions(tls_cert=tmp_path / "c.pem")
    with pytest.raises(ValueError, match="`tls_client_ca`"):
        ServerOptions(tls_client_ca=tmp_path / "ca.pem")


def test_micro_batcher_batches_and_splits() -> None:
    retriever = TermOverlapRetriever(tiny_catalog(), name="generative", delay_s=0.02)

    async def main() -> list[list[list[Hit]]]:
        batcher = MicroBatcher(retriever.retrieve, max_batch=8, max_wait_s=0.01)
        queries = [["drill"], ["saw", "hammer"], ["paint"], ["faucet"], ["hose"], ["bulb"], ["mower"],
                   ["toilet", "screws"], ["tape"]]
        out = await asyncio.gather(*[batcher.submit(q, k=2 if i % 2 else 3) for i, q in enumerate(queries)])
        await batcher.close()
        return out

    out = asyncio.run(main())
    assert sum(retriever.batch_sizes) == 11 and max(retriever.batch_sizes) <= 8 and len(retriever.batch_sizes) <= 3
    direct = retriever.retrieve(["saw", "hammer"], 2)
    assert out[1] == direct  # each caller gets its own queries' results, cut to its own k
    assert all(len(hits) <= 3 for res in out for hits in res)


def test_micro_batcher_fails_every_caller_of_a_failing_batch() -> None:
    async def main() -> list[object]:
        batcher = MicroBatcher(Faulty().retrieve, max_batch=4, max_wait_s=0.01)
        out = await asyncio.gather(batcher.submit(["down"], 1), batcher.submit(["x"], 1), return_exceptions=True)
        await batcher.close()
        return out

    assert all(isinstance(r, Unavailable) for r in asyncio.run(main()))


def test_filter_and_request_conversions() -> None:
    for spec in (FilterSpec("price", min=1.0), FilterSpec("price", max=9.5), FilterSpec("category", prefix="a/b"),
                 FilterSpec("brand", equals="Volta"), FilterSpec("colour")):
        assert filter_from_proto(filter_to_proto(spec)) == spec
    assert request_from_proto(search_pb2.SearchRequest(query="q")).top_k is None
    assert request_from_proto(search_pb2.SearchRequest(query="q", top_k=0)).top_k == 0


@pytest.mark.skipif(__import__("importlib").util.find_spec("opentelemetry.sdk") is not None,
                    reason="the OpenTelemetry SDK is installed; this checks the message shown without it")
def test_tracing_without_opentelemetry_says_what_to_install() -> None:
    srv = BackgroundServer(lambda: retriever_server([Faulty()], ServerOptions(tracing=True)))
    with pytest.raises(Unavailable, match="opentelemetry-sdk"):
        srv.start()
    srv._loop.call_soon_threadsafe(srv._loop.stop)


def test_an_empty_token_file_given_on_the_command_line_refuses_to_start(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tandem_app.cli.serve import _options
    from tandem_services.server import TandemServer

    monkeypatch.delenv("TANDEM_AUTH_TOKENS", raising=False)
    empty = tmp_path / "tokens"
    empty.write_text("# the Secret's key was empty\n")
    opts = _options("127.0.0.1", 0, None, None, None, empty, False)
    assert opts.require_auth
    with pytest.raises(InvalidInput, match="no token was found"):
        TandemServer([], opts)._interceptors()
