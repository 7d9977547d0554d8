"""IntentService over gRPC with a fitted decomposer, and the plaintext health-only port.

A real ``grpc.aio`` server with bearer-token auth: sub-intents (including the price filter
intent) arrive intact through :class:`RemoteIntents`; the health port answers kubelet-style
checks without a token, serves nothing else, and turns NOT_SERVING on shutdown.
"""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tandem.errors import TandemError
from tandem.intent import CatalogIntentDecomposer, IntentFilter
from tandem.v1 import intent_pb2, intent_pb2_grpc
from tandem_services.app import intent_server
from tandem_services.client import ChannelOptions, RemoteIntents
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions

pytestmark = pytest.mark.integration

TITLES = [f"{b} {t} in {f}" for b in ("Delta", "Moen", "Hampton Bay") for t in ("Kitchen Faucet", "Shower Head",
                                                                                  "Ceiling Fan")
          for f in ("Chrome", "Brushed Nickel", "White")]
TOKEN = "s3cret-intent-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    decomposer = CatalogIntentDecomposer.fit(TITLES, min_count=2)
    tokens = tmp_path_factory.mktemp("auth") / "tokens"
    tokens.write_text(TOKEN + "\n")
    opts = ServerOptions(port=0, health_port=0, auth_token_file=tokens, drain_s=0.2, grace_s=1)
    srv = BackgroundServer(lambda: intent_server(decomposer, opts))
    srv.start()
    yield srv, decomposer
    srv.stop()


def test_remote_intents_match_in_process(server) -> None:
    srv, decomposer = server
    remote = RemoteIntents(srv.address, ChannelOptions(token=TOKEN), timeout_s=5)
    for q in ("moen shower head chrome under $40", "delta kitchen faucet", "fan"):
        assert remote.decompose(q) == decomposer.decompose(q)
    assert remote.version() == decomposer.version()
    assert any(i.filter == IntentFilter(max_price=40.0) for i in remote.decompose("moen shower head < 40"))


def test_main_port_needs_the_token(server) -> None:
    srv, _ = server
    with pytest.raises(TandemError):
        RemoteIntents(srv.address, timeout_s=5).decompose("delta faucet")
    with grpc.insecure_channel(srv.address) as ch, pytest.raises(grpc.RpcError) as err:
        intent_pb2_grpc.IntentServiceStub(ch).Decompose(intent_pb2.DecomposeRequest(query="x"), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_port_is_plaintext_tokenless_and_health_only(server) -> None:
    srv, _ = server
    port = srv.server.health_port
    assert port and port != srv.port
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            intent_pb2_grpc.IntentServiceStub(ch).Decompose(intent_pb2.DecomposeRequest(query="x"), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_health_port_reports_draining() -> None:
    opts = ServerOptions(port=0, health_port=0, drain_s=1.0, grace_s=0)
    srv = BackgroundServer(lambda: intent_server(CatalogIntentDecomposer.fit(TITLES, min_count=2), opts))
    srv.start()
    port = srv.server.health_port
    stopping = srv.stop_async()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            statuses = set()
            for _ in range(20):
                try:
                    statuses.add(health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1).status)
                except grpc.RpcError:
                    break
                if health_pb2.HealthCheckResponse.NOT_SERVING in statuses:
                    break
        assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
    finally:
        stopping.result(timeout=10)
        srv.stop()
