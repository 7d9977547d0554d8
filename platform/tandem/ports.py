"""Exclusive gRPC listening ports, shared by every gRPC server Tandem starts.

gRPC Python turns ``SO_REUSEPORT`` on by default, which lets a second server bind a port
already in use and silently split the traffic with the first. Every server here is created
with :data:`EXCLUSIVE_PORT` and binds through :func:`add_port`, which raises
:class:`PortInUse` naming the port instead. It lives in core (no grpc import) so that the
services and the ingest consumer's health server (:mod:`tandem.streams.metrics`) share it.
"""

from __future__ import annotations

import errno
import socket
from typing import Any, Protocol

from tandem.errors import Unavailable

#: Channel option of every listener: one process per port (see the module docstring).
EXCLUSIVE_PORT = ("grpc.so_reuseport", 0)


class PortInUse(Unavailable):
    """The port to listen on is taken (usually by another server); the message names it."""


class Listener(Protocol):
    """What :func:`add_port` needs of a server: ``grpc.Server`` and ``grpc.aio.Server`` both fit."""

    def add_insecure_port(self, address: str) -> int:
        """Listen on ``address`` in plaintext; the bound port (0 or an exception on failure)."""
        ...

    def add_secure_port(self, address: str, server_credentials: Any) -> int:
        """Listen on ``address`` with TLS; the bound port (0 or an exception on failure)."""
        ...


def bind_error(host: str, port: int, what: str = "port", holder: str = "another `tandem serve`") -> Unavailable:
    """Why ``host:port`` could not be bound, as a domain error naming the port.

    gRPC reports only that binding failed; a plain bind of the same address says why.
    ``holder`` is the likely owner of a busy port, for the hint.
    """
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host.strip("[]"), port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return PortInUse(f"{what} {port} on {host} is already in use ({holder}?): "
                             f"stop that process or choose another port")
        return Unavailable(f"could not bind {what} {port} on {host}: {exc.strerror or exc}")
    return Unavailable(f"could not bind {what} {port} on {host}")


def add_port(server: Listener, host: str, port: int, creds: Any | None = None, what: str = "port",
             holder: str = "another `tandem serve`") -> int:
    """Listen on ``host:port`` (TLS with ``creds``, a ``grpc.ServerCredentials``); the bound
    port, or :class:`PortInUse` naming it.

    The server must have been created with :data:`EXCLUSIVE_PORT` in its options.
    """
    address = f"{host}:{port}"
    try:
        bound = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    except RuntimeError:  # grpcio >= 1.60 raises instead of returning 0
        bound = 0
    if bound == 0:
        raise bind_error(host, port, what, holder)
    return bound
