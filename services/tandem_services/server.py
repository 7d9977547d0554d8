"""One gRPC server shape for every Tandem service: interceptors, health, reflection, TLS,
limits and graceful shutdown."""

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
from grpc_reflection.v1alpha import reflection
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tandem.errors import InvalidInput
from tandem_services.interceptors import (
    AuthInterceptor,
    ErrorMappingInterceptor,
    MetricsInterceptor,
    TracingInterceptor,
    load_tokens,
)

log = logging.getLogger("tandem_services.server")


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
    auth_token_file: Path | None = None
    """File with bearer tokens, one per line; with ``TANDEM_AUTH_TOKENS`` (comma-separated) turns auth on."""
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

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerOptions:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidInput("`tls_cert` and `tls_key` must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise InvalidInput("`tls_client_ca` (mTLS) needs `tls_cert` and `tls_key`")
        return self

    def credentials(self) -> grpc.ServerCredentials | None:
        """Server credentials for TLS/mTLS, ``None`` for plaintext."""
        if self.tls_cert is None:
            return None
        ca = self.tls_client_ca.read_bytes() if self.tls_client_ca else None
        return grpc.ssl_server_credentials(
            [(self.tls_key.read_bytes(), self.tls_cert.read_bytes())],
            root_certificates=ca, require_client_auth=ca is not None,
        )


@dataclass(frozen=True)
class Service:
    """A servicer, the generated function that registers it, and its full proto name."""

    servicer: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    name: str


class TandemServer:
    """A started-on-demand ``grpc.aio`` server hosting ``services``.

    Shutdown (:meth:`stop`, or SIGTERM/SIGINT under :meth:`serve_forever`): every service
    turns NOT_SERVING, the server keeps answering for ``drain_s``, then stops accepting and
    gives in-flight calls ``grace_s`` to finish.
    """

    def __init__(self, services: Sequence[Service], options: ServerOptions | None = None,
                 on_stop: Sequence[Callable[[], Any]] = ()) -> None:
        self.options = options or ServerOptions()
        self.services = list(services)
        self.on_stop = list(on_stop)
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
        tokens = load_tokens(self.options.auth_token_file)
        if tokens:
            chain.append(AuthInterceptor(tokens))
        elif self.options.require_auth:
            raise InvalidInput("`require_auth` is set but no token was found (auth_token_file / TANDEM_AUTH_TOKENS)")
        chain.append(ErrorMappingInterceptor())
        return chain

    async def start(self) -> int:
        """Bind, start and mark every service SERVING; returns the bound port."""
        opts = self.options
        if opts.gil_switch_interval_ms is not None:
            sys.setswitchinterval(opts.gil_switch_interval_ms / 1000)
        limits = [("grpc.max_receive_message_length", opts.max_message_bytes),
                  ("grpc.max_send_message_length", opts.max_message_bytes)]
        server = grpc.aio.server(interceptors=self._interceptors(), options=limits,
                                 maximum_concurrent_rpcs=opts.max_concurrent_rpcs)
        for svc in self.services:
            svc.add_to_server(svc.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = [s.name for s in self.services]
        if opts.reflection:
            reflection.enable_server_reflection(
                [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server)
        address = f"{opts.host}:{opts.port}"
        creds = opts.credentials()
        port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"could not bind {address}")
        await server.start()
        self._server, self.port = server, port
        if opts.health_port is not None:
            await self._start_health_port()
        for name in ["", *names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", extra={"address": f"{opts.host}:{port}", "services": names, "tls": creds is not None,
                                   "health_port": self.health_port})
        return port

    async def _start_health_port(self) -> None:
        """The probe port: plaintext, no interceptors (kubelet sends no token), health only.

        It shares :attr:`health` with the main server, so draining shows on both at once.
        """
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"{self.options.host}:{self.options.health_port}"
        port = server.add_insecure_port(address)
        if port == 0:
            await self._server.stop(0)
            raise OSError(f"could not bind the health port {address}")
        await server.start()
        self._health_server, self.health_port = server, port

    async def stop(self) -> None:
        """Graceful shutdown (see the class docstring). Idempotent."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        if self._server is None:
            return
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
