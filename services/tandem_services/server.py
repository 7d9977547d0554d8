"""One gRPC server shape for every Tandem service: interceptors, health, reflection, TLS,
limits, graceful shutdown, and the health of optional dependencies (the result cache).

Ports are bound exclusively: gRPC Python turns ``SO_REUSEPORT`` on by default, which lets a
second server bind a port already in use and silently split the traffic with the first
(:mod:`tandem.ports`, shared with the ingest consumer's health server).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tandem.errors import InvalidInput, Unavailable
from tandem.ports import EXCLUSIVE_PORT, PortInUse, add_port  # noqa: F401 (PortInUse: re-exported)
from tandem_services.interceptors import (
    AuthInterceptor,
    ErrorMappingInterceptor,
    MetricsInterceptor,
    TracingInterceptor,
)
from tandem_services.tokens import TokenSet

log = logging.getLogger("tandem_services.server")

#: ``grpc.reflection.v1``: what current clients (grpcurl, grpcui, Postman) ask first. Its
#: messages are field-for-field those of ``v1alpha``, which is all grpcio-reflection < 1.82
#: ships, so the same servicer answers both names.
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


class ServerOptions(BaseModel):
    """Network, security and lifecycle options shared by all services."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    """Interface to bind (``0.0.0.0`` in a container)."""
    port: int = Field(default=0, ge=0, le=65535)
    """TCP port; 0 picks a free one (tests)."""
    tls_cert: Path | None = None
    """PEM server certificate chain; with ``tls_key`` turns TLS on."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    tls_client_ca: Path | None = None
    """PEM CA bundle for client certificates; set = mutual TLS (clients must present a certificate)."""
    tls_check_s: float = Field(default=1.0, gt=0)
    """Seconds between checks of the TLS files: a rotated certificate, key or client CA is served
    to new connections without a restart (:mod:`tandem_services.tls`)."""
    auth_token_file: Path | None = None
    """File with bearer tokens, one per line; with ``TANDEM_AUTH_TOKENS`` (comma-separated) turns auth on."""
    admin_token_file: Path | None = None
    """File with admin bearer tokens (AdminService, ``debug``), one per line; set = roles on: the
    ``auth_token_file`` tokens may then only search. Both files are re-read when they change."""
    require_auth: bool = False
    """Refuse to start when no token is configured (so a missing secret fails loudly)."""
    max_message_bytes: int = Field(default=1 << 20, ge=1024)
    """Largest request or response message; larger ones are rejected by gRPC (RESOURCE_EXHAUSTED)."""
    max_concurrent_rpcs: int = Field(default=256, ge=1)
    """Calls one server runs at once; more are refused at once with RESOURCE_EXHAUSTED (clients
    retry elsewhere) instead of queueing without bound behind the worker threads."""
    drain_s: float = Field(default=1.0, ge=0)
    """On shutdown: seconds of NOT_SERVING before the listener closes, so load balancers move away."""
    grace_s: float = Field(default=10.0, ge=0)
    """On shutdown: how long in-flight calls may finish before they are cancelled."""
    reflection: bool = True
    """Serve gRPC server reflection (grpcurl, grpcui)."""
    tracing: bool = False
    """OpenTelemetry spans per RPC (needs opentelemetry-sdk installed)."""
    gil_switch_interval_ms: float | None = Field(default=1.0, gt=0)
    """Python's GIL switch interval in this process (``None`` leaves the 5 ms default). A
    server hands every request between the event loop and worker threads; at 5 ms a thread
    that becomes ready can wait that long for a busy peer to yield the GIL, which shows as
    milliseconds of queueing per request. 1 ms trades a little throughput for latency."""
    health_port: int | None = Field(default=None, ge=0, le=65535)
    """Second, plaintext port serving only ``grpc.health.v1`` (kubelet's gRPC probes cannot
    speak TLS); ``None`` = off, 0 picks a free one (tests)."""
    dependency_check_s: float = Field(default=5.0, gt=0)
    """Seconds between checks of the optional dependencies (see :class:`Dependency`)."""
    max_connection_age_s: float | None = Field(default=60.0, gt=0)
    """Close each client connection after about this long (gRPC adds ±10 % jitter), so clients
    reconnect and spread over the replicas behind a Service: HTTP/2 connections are long-lived
    and a gateway would otherwise keep every call on the retriever pods it met first, leaving
    pods added by a scale-up idle. ``None`` = connections live for ever."""
    max_connection_age_grace_s: float = Field(default=10.0, ge=0)
    """How long calls in flight on an aged connection may finish before it is closed (longer
    than any search deadline; clients open the new connection meanwhile)."""

    def channel_options(self) -> list[tuple[str, Any]]:
        """The gRPC server options: message limits, the exclusive port, connection age."""
        opts: list[tuple[str, Any]] = [("grpc.max_receive_message_length", self.max_message_bytes),
                                       ("grpc.max_send_message_length", self.max_message_bytes), EXCLUSIVE_PORT]
        if self.max_connection_age_s is not None:
            opts += [("grpc.max_connection_age_ms", int(self.max_connection_age_s * 1000)),
                     ("grpc.max_connection_age_grace_ms", int(self.max_connection_age_grace_s * 1000))]
        return opts

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerOptions:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidInput("`tls_cert` and `tls_key` must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise InvalidInput("`tls_client_ca` (mTLS) needs `tls_cert` and `tls_key`")
        return self

    def credentials(self) -> grpc.ServerCredentials | None:
        """Server credentials for TLS/mTLS that follow their files, ``None`` for plaintext."""
        if self.tls_cert is None or self.tls_key is None:  # validated to come together
            return None
        from tandem_services.tls import ReloadingServerCertificate

        return ReloadingServerCertificate(self.tls_cert, self.tls_key, self.tls_client_ca,
                                          check_s=self.tls_check_s).credentials()


@dataclass(frozen=True)
class Service:
    """A servicer, the generated function that registers it, and its full proto name."""

    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    name: str


def _enable_reflection(names: Sequence[str], server: grpc.aio.Server) -> None:
    """Server reflection under ``grpc.reflection.v1alpha`` and ``grpc.reflection.v1``: one
    grpcio-reflection servicer registered under both names (their messages are identical)."""
    servicer = reflection.aio.ReflectionServicer([*names, reflection.SERVICE_NAME, REFLECTION_V1])
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": handler}),))


#: Health-service name prefix of the optional dependencies (``tandem.dependency.cache``).
DEPENDENCY_PREFIX = "tandem.dependency."
#: Dependency names a server may watch (what ``tandem health`` asks about).
KNOWN_DEPENDENCIES = ("cache",)


@dataclass(frozen=True)
class Dependency:
    """A backend the server runs without, at a cost: the Redis result cache (every search
    then misses). Its ``grpc.health.v1`` status is served under :attr:`health_name`, checked
    every ``dependency_check_s``, while the server itself ("") stays SERVING: degraded, not
    down, so probes do not restart a server that can still answer."""

    name: str
    """Short name, e.g. ``cache``."""
    check: Callable[[], bool]
    """``True`` when the dependency answers; runs in a worker thread; exceptions count as down."""
    describe: str = ""
    """What it is, for the logs (``redis at 127.0.0.1:6379/0``; no credentials)."""

    @property
    def health_name(self) -> str:
        """The name a health client checks: ``tandem.dependency.<name>``."""
        return DEPENDENCY_PREFIX + self.name


class TandemServer:
    """A started-on-demand ``grpc.aio`` server hosting ``services``.

    Shutdown (:meth:`stop`, or SIGTERM/SIGINT under :meth:`serve_forever`): every service
    turns NOT_SERVING, the server keeps answering for ``drain_s``, then stops accepting and
    gives in-flight calls ``grace_s`` to finish.
    """

    def __init__(self, services: Sequence[Service], options: ServerOptions | None = None,
                 on_stop: Sequence[Callable[[], Any]] = (), dependencies: Sequence[Dependency] = ()) -> None:
        self.options = options or ServerOptions()
        self.services = list(services)
        self.on_stop = list(on_stop)
        self.dependencies = list(dependencies)
        self.dependency_up: dict[str, bool] = {}
        """Last check of each dependency, by :attr:`Dependency.name`."""
        self._watcher: asyncio.Task | None = None
        self.health = health.aio.HealthServicer()
        self.port: int | None = None
        self.health_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self._stopping: asyncio.Task | None = None

    def _interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        chain: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor()]
        if self.options.tracing:
            chain.append(TracingInterceptor())
        tokens = TokenSet(self.options.auth_token_file, "TANDEM_AUTH_TOKENS")
        admin_file = self.options.admin_token_file
        admin = TokenSet(admin_file, what="admin_token_file") if admin_file else None
        if len(tokens) or admin is not None:
            chain.append(AuthInterceptor(tokens, admin=admin))
        elif self.options.require_auth:
            raise InvalidInput("`require_auth` is set but no token was found (auth_token_file / TANDEM_AUTH_TOKENS)")
        chain.append(ErrorMappingInterceptor())
        return chain

    async def start(self) -> int:
        """Bind, start and mark every service SERVING; returns the bound port."""
        opts = self.options
        if opts.gil_switch_interval_ms is not None:
            sys.setswitchinterval(opts.gil_switch_interval_ms / 1000)
        server = grpc.aio.server(interceptors=self._interceptors(), options=opts.channel_options(),
                                 maximum_concurrent_rpcs=opts.max_concurrent_rpcs)
        for svc in self.services:
            svc.add_to_server(svc.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [s.name for s in self.services]
        if opts.reflection:
            _enable_reflection([*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], server)
        creds = opts.credentials()
        port = add_port(server, opts.host, opts.port, creds)
        await server.start()
        self._server, self.port = server, port
        if opts.health_port is not None:
            await self._start_health_port(server, opts.health_port)
        for name in ["", *names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.dependencies:
            await self.check_dependencies()
            self._watcher = asyncio.ensure_future(self._watch_dependencies())
        log.info("serving", extra={"address": f"{opts.host}:{port}", "services": names, "tls": creds is not None,
                                   "health_port": self.health_port})
        return port

    async def _start_health_port(self, main: grpc.aio.Server, health_port: int) -> None:
        """The probe port: plaintext, no interceptors (kubelet sends no token), health only.

        It shares :attr:`health` with the main server, so draining shows on both at once.
        """
        server = grpc.aio.server(options=[EXCLUSIVE_PORT])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        try:
            port = add_port(server, self.options.host, health_port, what="health port")
        except Unavailable:
            await main.stop(0)
            raise
        await server.start()
        self._health_server, self.health_port = server, port

    def add_dependency(self, dependency: Dependency) -> None:
        """Watch ``dependency`` too (before :meth:`start`)."""
        if self._server is not None:
            raise RuntimeError("add dependencies before start()")
        self.dependencies.append(dependency)

    async def check_dependencies(self) -> dict[str, bool]:
        """Check every dependency once, publish its health, log each change of state."""
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        for dep in self.dependencies:
            try:
                up = bool(await asyncio.to_thread(dep.check))
            except Exception:  # noqa: BLE001 - contract: a failing check means "down"
                up = False
            before = self.dependency_up.get(dep.name)
            self.dependency_up[dep.name] = up
            await self.health.set(dep.health_name, serving if up else not_serving)
            if not up and before is not False:
                log.warning("dependency unreachable: serving degraded", extra={
                    "dependency": dep.name, "target": dep.describe, "health_service": dep.health_name})
            elif up and before is False:
                log.info("dependency reachable again", extra={"dependency": dep.name, "target": dep.describe})
        return dict(self.dependency_up)

    async def _watch_dependencies(self) -> None:
        while True:
            await asyncio.sleep(self.options.dependency_check_s)
            await self.check_dependencies()

    async def stop(self) -> None:
        """Graceful shutdown (see the class docstring). Idempotent."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        if self._server is None:
            return
        if self._watcher is not None:  # it must not flip a dependency back to SERVING
            self._watcher.cancel()
        await self.health.enter_graceful_shutdown()  # every service → NOT_SERVING
        log.info("draining", extra={"drain_s": self.options.drain_s, "grace_s": self.options.grace_s})
        await asyncio.sleep(self.options.drain_s)
        await self._server.stop(self.options.grace_s)
        if self._health_server is not None:
            await self._health_server.stop(0)
        for fn in self.on_stop:
            result = fn()
            if asyncio.iscoroutine(result):
                await result
        log.info("stopped")

    async def serve_forever(self) -> None:
        """Start, then run until SIGTERM/SIGINT, then shut down gracefully."""
        if self._server is None:
            await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.stop()
