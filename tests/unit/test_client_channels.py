"""Client channels do not inherit another channel's broken connection (a CI flake of
``tandem canary set``: a new channel to a new server on a port an old, stopped server had used
failed its first call with UNAVAILABLE while a leaked channel to the old one sat in backoff)."""

from __future__ import annotations

from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tandem_services.client import ChannelOptions


def _server(port: int) -> tuple[grpc.Server, int]:
    srv = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), srv)
    bound = srv.add_insecure_port(f"127.0.0.1:{port}")
    srv.start()
    return srv, bound


def _check(ch: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_a_new_channel_reaches_a_new_server_on_a_port_whose_old_server_left_a_channel_in_backoff() -> None:
    old, port = _server(0)
    stale = ChannelOptions().channel(f"127.0.0.1:{port}")
    assert _check(stale) == health_pb2.HealthCheckResponse.SERVING
    old.stop(0).wait()
    with pytest.raises(grpc.RpcError) as failed:
        _check(stale)  # the stale channel's connection is now broken and backing off
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    new, _ = _server(port)
    try:
        with ChannelOptions().channel(f"127.0.0.1:{port}") as fresh:
            assert _check(fresh) == health_pb2.HealthCheckResponse.SERVING
    finally:
        stale.close()
        new.stop(0)
