"""``tandem health --server HOST:PORT``: does a running server answer, is each of its
services SERVING, and are its optional dependencies (the result cache) reachable?

It speaks the standard ``grpc.health.v1`` (what kubelet and load balancers use) and lists
the services through server reflection, or, where reflection is off (the gateway's default),
probes every ``tandem.v1`` service by name, so it works against any ``tandem serve`` process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

#: Exit codes: a script can tell "down" from "up but degraded".
EXIT_SERVING, EXIT_DOWN, EXIT_USAGE, EXIT_DEGRADED = 0, 1, 2, 3


def _status_name(status: int | None) -> str:
    from grpc_health.v1 import health_pb2

    if status is None:  # the server does not register that name
        return "NOT_FOUND"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


def _listed_services(channel: Any, metadata: tuple, timeout_s: float) -> list[str]:
    """Service names from server reflection; empty when the server has reflection off."""
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    try:
        (response,) = list(stub.ServerReflectionInfo(  # type: ignore[operator]  # grpc stubs: untyped stream method
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=timeout_s, metadata=metadata))
    except grpc.RpcError:
        return []
    return [s.name for s in response.list_services_response.service
            if not s.name.startswith(("grpc.reflection.", "grpc.health."))]


def _tandem_services() -> list[str]:
    """Every ``tandem.v1`` service name, probed one by one when the server has reflection off
    (the public gateway's default): health answers NOT_FOUND for those it does not serve."""
    from tandem.v1 import admin_pb2, feedback_pb2, intent_pb2, retriever_pb2, search_pb2

    return [svc.full_name for mod in (search_pb2, retriever_pb2, intent_pb2, feedback_pb2, admin_pb2)
            for svc in mod.DESCRIPTOR.services_by_name.values()]


def check_server(server: str, options: Any, timeout_s: float) -> tuple[int, list[tuple[str, str]]]:
    """``(exit code, [(name, status)])`` for ``server``: the server itself, each service it
    lists, and each dependency it watches (``tandem.dependency.*``).

    Raises ``grpc.RpcError`` when the server does not answer at all.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tandem_services.server import DEPENDENCY_PREFIX, KNOWN_DEPENDENCIES

    serving = health_pb2.HealthCheckResponse.SERVING
    metadata = options.metadata()
    with options.channel(server) as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        def check(name: str) -> int | None:
            try:
                request = health_pb2.HealthCheckRequest(service=name)
                # grpc stubs declare no Check: the stub sets its methods in __init__
                return stub.Check(request, timeout=timeout_s, metadata=metadata).status  # type: ignore[attr-defined]
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:  # not registered on this server
                    return None
                raise

        overall = check("")
        rows = [("server", _status_name(overall))]
        for name in _listed_services(channel, metadata, timeout_s) or _tandem_services():
            status = check(name)
            if status is not None:
                rows.append((name, _status_name(status)))
        degraded = []
        for dep in KNOWN_DEPENDENCIES:
            status = check(DEPENDENCY_PREFIX + dep)
            if status is None:
                continue
            rows.append((f"dependency {dep}", _status_name(status)))
            if status != serving:
                degraded.append(dep)
    if overall != serving:
        return EXIT_DOWN, rows
    return (EXIT_DEGRADED if degraded else EXIT_SERVING), rows


def _check_until_serving(server: str, options: Any, timeout_s: float, wait_s: float) -> tuple[int, list]:
    """:func:`check_server`, repeated every half second for up to ``wait_s`` while the server
    does not answer or is not SERVING yet; the last answer (or error) stands."""
    import time

    import grpc

    deadline = time.monotonic() + wait_s
    while True:
        try:
            code, rows = check_server(server, options, timeout_s)
            if code != EXIT_DOWN or time.monotonic() >= deadline:
                return code, rows
        except grpc.RpcError as exc:
            retry = exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            if not retry or time.monotonic() >= deadline:
                raise
        time.sleep(0.5)


def health(
    server: Annotated[str, typer.Option(help="host:port of a running `tandem serve` (gateway or any service).")],
    token: Annotated[str | None, typer.Option(envvar="TANDEM_TOKEN", help="Bearer token, if the server wants one.")] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="PEM CA of --server (turns TLS on).")] = None,
    timeout_s: Annotated[float, typer.Option(help="Deadline of each check, seconds.")] = 3.0,
    wait_s: Annotated[float, typer.Option(
        help="Keep asking for up to this many seconds until the server is SERVING (a server starting up).")] = 0.0,
) -> None:
    """Check a running server over grpc.health.v1: the server, its services and its dependencies.

    Exit 0: all SERVING; 3: serving, but a dependency is down (e.g. Redis: searches run
    uncached); 1: not serving or not answering; 2: bad arguments.
    """
    import grpc

    from tandem_app.cli._options import NO_SERVER_HINT, server_address
    from tandem.errors import InvalidInput
    from tandem_services.client import ChannelOptions

    if not timeout_s > 0:
        raise typer.BadParameter("must be > 0", param_hint="--timeout-s")
    if wait_s < 0:
        raise typer.BadParameter("must be >= 0", param_hint="--wait-s")
    try:
        target = server_address(server)
    except InvalidInput as exc:
        typer.echo(f"tandem health: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    try:
        code, rows = _check_until_serving(target, ChannelOptions(token=token, tls_ca=tls_ca), timeout_s, wait_s)
    except grpc.RpcError as exc:
        typer.echo(f"tandem health: {target}: {exc.code().name}: {exc.details()}", err=True)
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            typer.echo(f"tandem health: {NO_SERVER_HINT}", err=True)
        raise typer.Exit(EXIT_DOWN) from None
    width = max(len(name) for name, _ in rows)
    for name, status in rows:
        typer.echo(f"{name:<{width}}  {status}")
    if code == EXIT_DEGRADED:
        down = [name.removeprefix("dependency ") for name, status in rows
                if name.startswith("dependency ") and status != "SERVING"]
        typer.echo(f"degraded: {', '.join(down)} unreachable; the server answers without it "
                   "(see its log for the address)", err=True)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    """Attach ``health`` as a top-level command."""
    app.command("health")(health)
