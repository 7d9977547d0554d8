"""The gRPC server shape as a new user meets it: one server per port, reflection under both
names clients ask for, and optional dependencies reported through health (issue 24).

Real in-process ``grpc.aio`` servers on loopback; nothing else is started.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from tandem_services.server import REFLECTION_V1, Dependency, PortInUse, ServerOptions, TandemServer


def _options(port: int = 0) -> ServerOptions:
    return ServerOptions(port=port, drain_s=0, grace_s=0)


def test_a_second_server_on_a_busy_port_is_refused_naming_the_port() -> None:
    async def main() -> tuple[int, str]:
        first = TandemServer([], _options())
        port = await first.start()
        try:
            with pytest.raises(PortInUse) as caught:
                await TandemServer([], _options(port)).start()
            return port, str(caught.value)
        finally:
            await first.stop()

    port, message = asyncio.run(main())
    assert f"port {port} on 127.0.0.1 is already in use" in message


def test_a_busy_health_port_is_refused_naming_it() -> None:
    async def main() -> tuple[int, str]:
        first = TandemServer([], ServerOptions(port=0, health_port=0, drain_s=0, grace_s=0))
        await first.start()
        second = TandemServer([], ServerOptions(port=0, health_port=first.health_port, drain_s=0, grace_s=0))
        try:
            with pytest.raises(PortInUse) as caught:
                await second.start()
            return first.health_port, str(caught.value)
        finally:
            await first.stop()

    health_port, message = asyncio.run(main())
    assert f"health port {health_port} on 127.0.0.1 is already in use" in message


def _list_services(address: str, method: str) -> list[str]:
    with grpc.insecure_channel(address) as ch:
        call = ch.stream_stream(method, request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
        (response,) = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    return [s.name for s in response.list_services_response.service]


@pytest.mark.parametrize("package", ["grpc.reflection.v1alpha", "grpc.reflection.v1"])
def test_reflection_answers_under_v1_and_v1alpha(package: str) -> None:
    async def main() -> list[str]:
        server = TandemServer([], _options())
        port = await server.start()
        try:
            return await asyncio.to_thread(
                _list_services, f"127.0.0.1:{port}", f"/{package}.ServerReflection/ServerReflectionInfo")
        finally:
            await server.stop()

    names = asyncio.run(main())
    assert "grpc.health.v1.Health" in names
    assert {"grpc.reflection.v1alpha.ServerReflection", REFLECTION_V1} <= set(names)


def _health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_an_unreachable_dependency_is_reported_degraded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    state = {"up": False}
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING

    async def main() -> list[tuple[int, int]]:
        dep = Dependency("cache", lambda: state["up"], describe="redis at 127.0.0.1:1/0")
        server = TandemServer([], ServerOptions(port=0, drain_s=0, grace_s=0, dependency_check_s=60))
        server.add_dependency(dep)
        port = await server.start()
        address = f"127.0.0.1:{port}"
        seen = []
        try:
            for up in (False, True):
                state["up"] = up
                await server.check_dependencies()
                seen.append((await asyncio.to_thread(_health, address, ""),
                             await asyncio.to_thread(_health, address, dep.health_name)))
        finally:
            await server.stop()
        return seen

    with caplog.at_level(logging.INFO, logger="tandem_services.server"):
        seen = asyncio.run(main())
    # Down: the server still serves (degraded), the dependency's own entry says NOT_SERVING.
    assert seen == [(serving, not_serving), (serving, serving)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].dependency == "cache"
    assert any(r.getMessage() == "dependency reachable again" for r in caplog.records)


def test_a_check_that_raises_counts_as_down() -> None:
    def broken() -> bool:
        raise ConnectionError("boom")

    async def main() -> dict[str, bool]:
        server = TandemServer([], _options(), dependencies=[Dependency("cache", broken)])
        await server.start()
        try:
            return dict(server.dependency_up)
        finally:
            await server.stop()

    assert asyncio.run(main()) == {"cache": False}
