"""gRPC servers age their connections out (issue 19 item 7): ``grpc.max_connection_age_ms``
with a grace, so clients reconnect and spread over the replicas behind a Service."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions, TandemServer


def test_default_options_age_connections_with_a_grace() -> None:
    opts = dict(ServerOptions().channel_options())
    assert opts["grpc.max_connection_age_ms"] == 60_000
    assert opts["grpc.max_connection_age_grace_ms"] == 10_000
    assert opts["grpc.max_receive_message_length"] == opts["grpc.max_send_message_length"] == 1 << 20
    assert opts["grpc.so_reuseport"] == 0
    custom = dict(ServerOptions(max_connection_age_s=0.5, max_connection_age_grace_s=2).channel_options())
    assert (custom["grpc.max_connection_age_ms"], custom["grpc.max_connection_age_grace_ms"]) == (500, 2000)
    assert "grpc.max_connection_age_ms" not in dict(ServerOptions(max_connection_age_s=None).channel_options())
    with pytest.raises(ValueError):
        ServerOptions(max_connection_age_s=0)


def test_the_server_closes_an_aged_connection_and_the_client_reconnects() -> None:
    opts = ServerOptions(drain_s=0, grace_s=0, max_connection_age_s=0.3, max_connection_age_grace_s=0.2)
    with BackgroundServer(lambda: TandemServer([], opts)) as srv, grpc.insecure_channel(srv.address) as channel:
        states: list[grpc.ChannelConnectivity] = []
        seen = threading.Lock()

        def record(state: grpc.ChannelConnectivity) -> None:
            with seen:
                states.append(state)

        channel.subscribe(record, try_to_connect=True)
        stub = health_pb2_grpc.HealthStub(channel)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        ready, idle = grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE

        def closed_after_ready() -> bool:
            with seen:
                return ready in states and idle in states[states.index(ready):]

        deadline = time.monotonic() + 5
        while not closed_after_ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert closed_after_ready(), f"the connection was never closed: {states}"
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
        channel.unsubscribe(record)
