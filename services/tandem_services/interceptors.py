"""Server interceptors: error mapping, bearer-token auth, metrics + access logs, tracing.

Each wraps the unary-unary behaviours of the handlers it sees (streaming methods such as
reflection pass through, except that auth guards them too).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
from grpc.aio import AbortError, ServerInterceptor

from tandem.errors import InvalidInput, TandemError
from tandem_services.metrics import RPC_LATENCY, RPC_REQUESTS
from tandem_services.tokens import TokenSet, read_token_file, redact

log = logging.getLogger("tandem_services.rpc")

Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]

#: Methods reachable without a token: probes and API discovery.
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _wrap_unary(handler: grpc.RpcMethodHandler | None, wrapper) -> grpc.RpcMethodHandler | None:
    if handler is None or handler.unary_unary is None:
        return handler
    return handler._replace(unary_unary=wrapper(handler.unary_unary))  # type: ignore[attr-defined]  # grpc's handlers are namedtuples; the stub omits _replace


class _WrappedHandlers:
    """Each method's wrapped handler, built once.

    grpc hands an interceptor the same handler object for a method on every call, so the
    wrapper closures and the ``_replace``d handler can be reused instead of rebuilt per
    request (a measurable share of a cache hit's CPU). Only registered methods are kept, so
    clients sending made-up method names cannot grow it.
    """

    def __init__(self) -> None:
        self._by_method: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler | None]] = {}

    def wrap(self, method: str, handler: grpc.RpcMethodHandler | None, wrapper) -> grpc.RpcMethodHandler | None:
        """``handler`` with its unary-unary behaviour wrapped by ``wrapper`` (cached per method)."""
        if handler is None:
            return None
        hit = self._by_method.get(method)
        if hit is not None and hit[0] is handler:
            return hit[1]
        wrapped = _wrap_unary(handler, wrapper)
        self._by_method[method] = (handler, wrapped)
        return wrapped


async def _call(behavior, request: Any, context: grpc.aio.ServicerContext) -> Any:
    result = behavior(request, context)
    return await result if asyncio.iscoroutine(result) else result


class ErrorMappingInterceptor(ServerInterceptor):
    """Domain errors → their ``grpc_status``; anything else → ``INTERNAL`` with an opaque reference.

    Stack traces go to the log under that reference, never to the client.
    """

    def __init__(self) -> None:
        self._handlers = _WrappedHandlers()

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        method = details.method

        def wrapper(behavior):
            async def guarded(request, context):
                try:
                    return await _call(behavior, request, context)
                except (AbortError, asyncio.CancelledError):
                    raise
                except TandemError as exc:
                    code = getattr(grpc.StatusCode, exc.grpc_status, grpc.StatusCode.INTERNAL)
                    if not isinstance(exc, InvalidInput):
                        log.warning("domain error", extra={"method": method, "error": repr(exc)})
                    await context.abort(code, redact(str(exc)))
                except Exception:
                    ref = uuid.uuid4().hex[:12]
                    log.exception("internal error", extra={"method": method, "ref": ref})
                    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {ref})")
            return guarded

        return self._handlers.wrap(method, handler, wrapper)


def load_tokens(token_file: str | Path | None = None, env_var: str = "TANDEM_AUTH_TOKENS") -> list[str]:
    """Tokens from ``token_file`` (one per line, ``#`` comments) and/or ``env_var`` (comma-separated)."""
    tokens: list[str] = []
    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise InvalidInput(f"`auth_token_file` {str(path)!r} does not exist")
        tokens += read_token_file(path)
    tokens += [t.strip() for t in os.environ.get(env_var, "").split(",") if t.strip()]
    return tokens


#: Methods only an admin token may call (when admin tokens are configured).
ADMIN_PREFIXES = ("/tandem.v1.AdminService/", "/tandem.v1.CanaryService/")
#: Request fields only an admin token may set, by method: ``debug`` returns every source's raw
#: lists (~0.4 MB a response, and the ranking internals).
ADMIN_FIELDS = {"/tandem.v1.SearchService/Search": "debug"}


class _StaticTokens(TokenSet):
    """A :class:`TokenSet` over tokens given in code (tests, embedding)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        super().__init__()
        self._env = [hashlib.sha256(t.encode()).digest() for t in tokens]


def _bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    value = next((v for k, v in (metadata or ()) if k == "authorization"), None)
    if not isinstance(value, str) or not value.startswith("Bearer "):
        return None
    return value[len("Bearer "):].strip()


class AuthInterceptor(ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` from ``tokens`` (or ``admin``), with roles.

    ``tokens`` may search (call every non-admin method); ``admin`` tokens may also call
    :data:`ADMIN_PREFIXES` methods and set :data:`ADMIN_FIELDS` (``debug``): others get
    PERMISSION_DENIED naming what needs the admin role. Without ``admin`` (``None``) every
    valid token has both roles, as before roles existed. Token sets are :class:`TokenSet` objects
    (re-read when their files change) or plain iterables. Comparison is constant-time per token.
    """

    def __init__(self, tokens: Iterable[str] | TokenSet, public_prefixes: tuple[str, ...] = PUBLIC_PREFIXES, *,
                 admin: Iterable[str] | TokenSet | None = None) -> None:
        self._tokens = tokens if isinstance(tokens, TokenSet) else _StaticTokens(tokens)
        self._admin = admin if admin is None or isinstance(admin, TokenSet) else _StaticTokens(admin)
        if not len(self._tokens) and not (self._admin is not None and len(self._admin)):
            raise InvalidInput("`tokens` is empty; auth needs at least one token")
        self._public = public_prefixes
        self._handlers = _WrappedHandlers()

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails):
        method = details.method
        if method.startswith(self._public):
            return await continuation(details)
        token = _bearer(details.invocation_metadata)
        searcher = self._tokens.matches(token)
        admin = self._admin.matches(token) if self._admin is not None else searcher
        handler = await continuation(details)
        if handler is None:
            return None
        if not (searcher or admin):
            return _denied(handler, grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        if not admin and method.startswith(ADMIN_PREFIXES):
            return _denied(handler, grpc.StatusCode.PERMISSION_DENIED,
                           f"{method.strip('/')} needs an admin token; this token may only search")
        field = ADMIN_FIELDS.get(method)
        if admin or field is None:
            return handler

        def wrapper(behavior):
            async def checked(request, context):
                if getattr(request, field, False):
                    await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                        f"`{field}` needs an admin token; send the request without `{field}`")
                return await _call(behavior, request, context)
            return checked

        return self._handlers.wrap(method, handler, wrapper)


def _denied(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour replaced by an abort with ``code`` and ``message``."""

    async def deny(request_or_iterator, context):
        await context.abort(code, message)

    kind = next(k for k in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
                if getattr(handler, k) is not None)
    if kind.endswith("stream") and kind != "stream_unary":
        async def deny_stream(request_or_iterator, context):
            await context.abort(code, message)
            yield  # pragma: no cover - makes this an async generator
        return handler._replace(**{kind: deny_stream})  # type: ignore[attr-defined]  # grpc's handlers are namedtuples; the stub omits _replace
    return handler._replace(**{kind: deny})  # type: ignore[attr-defined]  # grpc's handlers are namedtuples; the stub omits _replace


class MetricsInterceptor(ServerInterceptor):
    """Request count and latency per method and status code, plus one structured access-log line."""

    def __init__(self) -> None:
        self._handlers = _WrappedHandlers()

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        method = details.method

        def wrapper(behavior):
            async def timed(request, context):
                started = time.perf_counter()
                code = "OK"
                try:
                    return await _call(behavior, request, context)
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except BaseException:
                    c = context.code()
                    code = c.name if isinstance(c, grpc.StatusCode) else "UNKNOWN"
                    raise
                finally:
                    took = time.perf_counter() - started
                    RPC_REQUESTS.labels(method, code).inc()
                    RPC_LATENCY.labels(method).observe(took)
                    if log.isEnabledFor(logging.INFO):
                        log.info("rpc", extra={"method": method, "code": code, "ms": round(took * 1000, 3)})
            return timed

        return self._handlers.wrap(method, handler, wrapper)


class TracingInterceptor(ServerInterceptor):
    """One OpenTelemetry span per RPC (off by default).

    OpenTelemetry is not a Tandem dependency. The API alone records nothing, so turning
    tracing on without the SDK raises :class:`~tandem.errors.Unavailable` naming what to
    install, rather than silently dropping every span. The exporter is configured the
    standard way (``opentelemetry-instrument`` or ``OTEL_*`` variables).
    """

    def __init__(self) -> None:
        try:
            import opentelemetry.sdk  # noqa: F401 - presence check: without it spans go nowhere
            from opentelemetry import trace
        except ImportError as exc:
            from tandem.errors import Unavailable

            raise Unavailable(
                "tracing needs the OpenTelemetry SDK: `pip install opentelemetry-sdk opentelemetry-exporter-otlp` "
                "and run under `opentelemetry-instrument` (or set OTEL_* variables); or leave tracing off "
                "(the default)"
            ) from exc
        self._tracer = trace.get_tracer("tandem_services")
        self._handlers = _WrappedHandlers()

    async def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails):
        handler = await continuation(details)
        method = details.method

        def wrapper(behavior):
            async def traced(request, context):
                with self._tracer.start_as_current_span(method):
                    return await _call(behavior, request, context)
            return traced

        return self._handlers.wrap(method, handler, wrapper)
