"""Clients: :class:`SearchClient` for the gateway, :class:`RemoteRetriever` and
:class:`RemoteIntents` (core interfaces spoken over gRPC, so the gateway runs the same
:class:`~tandem.search.HybridSearcher` whether its sources are local or remote)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from tandem.errors import InvalidInput, TandemError, Unavailable
from tandem.intent.base import Intent, IntentDecomposer
from tandem.retriever import Hit, Retriever, validate_queries, validate_scoring
from tandem.search.request import FilterSpec
from tandem.v1 import (
    intent_pb2,
    intent_pb2_grpc,
    retriever_pb2,
    retriever_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)
from tandem_services.convert import filter_to_proto, intent_from_proto


#: Reconnect backoff of client channels (see :meth:`ChannelOptions.channel`).
RECONNECT_INITIAL_MS = 200
RECONNECT_MAX_MS = 2000
#: How often a gateway re-reads a remote retriever's version (its result-cache key). As often
#: as the sparse service follows the ingest writer (``app.SPARSE_FOLLOW_S``): with 1 s, a
#: search that missed a fresh item cached that miss under the old index version and kept
#: serving it for up to 1 s after the index had it (the chart-topology test measured
#: publish→found p50 1.0 s against 0.35 s at the sparse service). One small ``Info`` call per
#: retriever every 0.25 s costs nothing.
VERSION_TTL_S = 0.25


@dataclass(frozen=True)
class ChannelOptions:
    """How to reach a server: TLS material (``tls_ca`` turns TLS on; client cert/key = mTLS),
    a bearer token, and the message size limit."""

    tls_ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    token: str | None = None
    max_message_bytes: int = 1 << 20
    #: Override the TLS target name (tests with a certificate for ``localhost``).
    server_name: str | None = None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Per-call metadata carrying the bearer token (empty without one)."""
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel(self, target: str) -> grpc.Channel:
        """A synchronous channel to ``target`` (``host:port``)."""
        opts: list[tuple[str, int | str]] = [("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
                # gRPC's default reconnect backoff (1 s, growing to 120 s) kept a gateway
                # degraded for up to 3.3 s after a restarted retriever was back (bench.faults);
                # between pods on one cluster a short, capped backoff costs nothing.
                ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
                ("grpc.min_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
                ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
                # Channels with the same target and options share subchannels process-wide by
                # default: a channel left open to a server that stopped keeps its subchannel in
                # backoff, and a new channel to a new server on the same port then failed its
                # first call with UNAVAILABLE (a CI flake of `tandem canary set`). A local pool
                # gives each channel its own connections, as a client expects.
                ("grpc.use_local_subchannel_pool", 1)]
        if self.server_name:
            opts.append(("grpc.ssl_target_name_override", self.server_name))
        if self.tls_ca is None:
            if self.client_cert or self.client_key:
                raise InvalidInput("`client_cert`/`client_key` need `tls_ca`")
            return grpc.insecure_channel(target, options=opts)
        creds = grpc.ssl_channel_credentials(
            root_certificates=self.tls_ca.read_bytes(),
            private_key=self.client_key.read_bytes() if self.client_key else None,
            certificate_chain=self.client_cert.read_bytes() if self.client_cert else None,
        )
        return grpc.secure_channel(target, creds, options=opts)


def _translate(exc: grpc.RpcError, what: str) -> TandemError:
    """A gRPC error from a server as the domain error it stands for."""
    code = exc.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidInput(exc.details() or "")
    return Unavailable(f"{what}: {code.name}: {exc.details()}")


class SearchClient:
    """A small client for ``tandem.v1.SearchService`` (what ``tandem search --server`` uses)."""

    def __init__(self, target: str, options: ChannelOptions | None = None, timeout_s: float = 5.0) -> None:
        self.options = options or ChannelOptions()
        self.timeout_s = timeout_s
        self._channel = self.options.channel(target)
        self._stub = search_pb2_grpc.SearchServiceStub(self._channel)

    def search(self, query: str, top_k: int | None = None, filters: Sequence[FilterSpec] = (), *,
               debug: bool = False, user_id: str = "", timeout_s: float | None = None) -> search_pb2.SearchResponse:
        """One search; raises ``grpc.RpcError`` with the server's status on failure."""
        request = search_pb2.SearchRequest(query=query, top_k=top_k, filters=[filter_to_proto(f) for f in filters],
                                           debug=debug, user_id=user_id)
        return self._stub.Search(request, timeout=timeout_s or self.timeout_s, metadata=self.options.metadata())

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> SearchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteRetriever(Retriever):
    """A :class:`Retriever` served by a ``tandem.v1.RetrieverService``.

    :meth:`version` is what the server last reported (refreshed by every response and by an
    ``Info`` call every ``version_ttl_s``), so a server-side reload changes the gateway's
    cache keys within ``version_ttl_s`` plus one round trip.
    """

    def __init__(self, target: str, name: str, *, source: str = "", options: ChannelOptions | None = None,
                 timeout_s: float = 1.0, version_ttl_s: float = VERSION_TTL_S) -> None:
        self.name = name
        self.target = target
        self.source = source
        self.timeout_s = timeout_s
        self.version_ttl_s = version_ttl_s
        self.options = options or ChannelOptions()
        self._channel = self.options.channel(target)
        self._stub = retriever_pb2_grpc.RetrieverServiceStub(self._channel)
        self._version = "unknown"
        self._score_names: tuple[str, ...] = ()
        self._poller: threading.Thread | None = None
        self._closed = threading.Event()
        self._mu = threading.Lock()

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """See :meth:`Retriever.retrieve`; bounded by ``timeout_s``."""
        return self.retrieve_within(queries, k, self.timeout_s)

    def retrieve_within(self, queries: Sequence[str], k: int, timeout_s: float) -> list[list[Hit]]:
        """:meth:`retrieve` with the gRPC deadline ``timeout_s`` (the searcher's remaining budget)."""
        validate_queries(queries, k)
        request = retriever_pb2.RetrieveRequest(queries=list(queries), k=k, source=self.source)
        try:
            response = self._stub.Retrieve(request, timeout=timeout_s, metadata=self.options.metadata())
        except grpc.RpcError as exc:
            raise _translate(exc, f"{self.name} at {self.target}") from None
        self._remember(response.version)
        return [[Hit(item_id=h.item_id, score=h.score, source=self.name) for h in hl.hits]
                for hl in response.results]

    @property
    def score_names(self) -> tuple[str, ...]:  # type: ignore[override]  # read-only view of the base class attribute
        """What the server's source scores (from its ``Info``, refreshed with the version)."""
        self.version()  # the first call fetches Info
        return self._score_names

    def score_items(self, query: str, item_ids: Sequence[str]) -> list[tuple[float, ...] | None]:
        """See :meth:`Retriever.score_items`; bounded by ``timeout_s`` (the searcher stops
        waiting at its own deadline and flags the scores missing)."""
        validate_scoring(query, item_ids)
        request = retriever_pb2.ScoreRequest(query=query, item_ids=list(item_ids), source=self.source)
        try:
            response = self._stub.Score(request, timeout=self.timeout_s, metadata=self.options.metadata())
        except grpc.RpcError as exc:
            raise _translate(exc, f"{self.name} at {self.target}") from None
        self._remember(response.version)
        self._score_names = tuple(response.names)
        return [tuple(s.values) if s.known else None for s in response.scores]

    def _remember(self, version: str) -> None:
        self._version = version

    def version(self) -> str:
        """The server's version (see the class docstring); the last known one while it is down.

        Never does I/O after the first call: a daemon thread refreshes it every
        ``version_ttl_s`` (searches read versions on the gateway's event loop, where a
        round trip would stall every other request). The first call fetches it (≤ 0.25 s).
        """
        if self._poller is None:
            with self._mu:
                if self._poller is None:
                    self._fetch_version()
                    self._poller = threading.Thread(target=self._poll, name=f"tandem-version-{self.name}",
                                                    daemon=True)
                    self._poller.start()
        return self._version

    def _fetch_version(self) -> None:
        try:
            info = self._stub.Info(retriever_pb2.InfoRequest(), timeout=min(self.timeout_s, 0.25),
                                   metadata=self.options.metadata())
        except (grpc.RpcError, ValueError):  # down (keep the last known), or the channel is closed
            return
        for s in info.sources:
            if not self.source or s.name == self.source:
                self._version = s.version
                self._score_names = tuple(s.score_names)
                return

    def _poll(self) -> None:
        while not self._closed.wait(self.version_ttl_s):
            self._fetch_version()

    def close(self) -> None:
        """Stop the version poller and close the channel."""
        self._closed.set()
        self._channel.close()


class RemoteIntents(IntentDecomposer):
    """An :class:`IntentDecomposer` served by a ``tandem.v1.IntentService``."""

    name = "remote-intents"

    def __init__(self, target: str, options: ChannelOptions | None = None, timeout_s: float = 0.2) -> None:
        self.options = options or ChannelOptions()
        self.timeout_s = timeout_s
        self._channel = self.options.channel(target)
        self._stub = intent_pb2_grpc.IntentServiceStub(self._channel)
        self._version = "unknown"

    def decompose(self, query: str) -> list[Intent]:
        """Sub-intents from the server; :class:`Unavailable` when it cannot answer or answers an
        invalid intent (the server's fault, not the caller's: the searcher degrades to the whole
        query), e.g. a ``filter`` intent without its typed filter from an older server."""
        try:
            r = self._stub.Decompose(intent_pb2.DecomposeRequest(query=query), timeout=self.timeout_s,
                                     metadata=self.options.metadata())
        except grpc.RpcError as exc:
            raise _translate(exc, "intent service") from None
        try:
            intents = [intent_from_proto(i, f"intents[{n}]") for n, i in enumerate(r.intents)]
        except InvalidInput as exc:
            raise Unavailable(f"intent service answered an invalid intent: {exc}") from None
        self._version = r.version
        return intents

    def version(self) -> str:
        """The version the server last reported."""
        return self._version
