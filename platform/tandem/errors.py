"""Domain errors. Each knows the gRPC status it maps to, so one interceptor translates them.

Client mistakes are :class:`InvalidInput` (``INVALID_ARGUMENT``); our own faults never are.
"""

from __future__ import annotations


class TandemError(Exception):
    """Base class of Tandem's domain errors."""

    #: Name of the ``grpc.StatusCode`` member this error maps to.
    grpc_status: str = "INTERNAL"


class InvalidInput(TandemError, ValueError):
    """The caller's input is wrong; the message names the field in backticks."""

    grpc_status = "INVALID_ARGUMENT"


class NotFound(TandemError, LookupError):
    """A named thing (item, artifact, model) does not exist."""

    grpc_status = "NOT_FOUND"


class Unavailable(TandemError):
    """A dependency (retriever, JVM, broker) cannot serve right now; retrying may help."""

    grpc_status = "UNAVAILABLE"


class CorruptArtifact(TandemError):
    """An artifact failed its checksum or format check and was refused."""

    grpc_status = "FAILED_PRECONDITION"
