"""gRPC servicers: thin adapters from the network to the core (no search logic here)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor

import grpc

from tandem.errors import InvalidInput
from tandem.intent.base import IntentDecomposer
from tandem.retriever import Retriever, refresh_sources, validate_queries, validate_scoring
from tandem.search.catalog import StoredFieldsLookup
from tandem.search.memo import CacheMiss, RecentMemo
from tandem.search.orchestrator import HybridSearcher
from tandem.search.request import check_filter_count
from tandem.search.results import SearchResult
from tandem.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    intent_pb2,
    intent_pb2_grpc,
    retriever_pb2,
    retriever_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)
from tandem_services.batching import MicroBatcher
from tandem_services.convert import intent_to_proto, meta_to_proto, request_from_proto, result_to_proto
from tandem_services.executors import within_budget
from tandem_services.metrics import RETRIEVE_LATENCY, SEARCH_CACHE_HITS, SEARCH_DEGRADED

#: Time kept back from the client's deadline for the hop back to the event loop, serialising
#: and sending the response: a floor plus a share of the budget, capped. A fixed 2 ms was
#: not enough on a loaded 2-core machine (a degraded answer arrived 0.1 ms after a 300 ms
#: client deadline in CI), and a late answer is an error to the client, not a degraded result.
RESPONSE_MARGIN_MIN_S = 0.01
RESPONSE_MARGIN_SHARE = 0.05
RESPONSE_MARGIN_MAX_S = 0.05


def response_margin_s(left: float) -> float:
    """How much of ``left`` seconds to keep for delivering the response."""
    return min(RESPONSE_MARGIN_MAX_S, max(RESPONSE_MARGIN_MIN_S, RESPONSE_MARGIN_SHARE * left))


def remaining_s(context: grpc.aio.ServicerContext, default: float | None) -> float | None:
    """The client's remaining deadline minus the response margin (``default`` when it set none)."""
    left = context.time_remaining()
    if left is None:
        return default
    left -= response_margin_s(left)
    return left if default is None else min(left, default)


class SearchServicer(search_pb2_grpc.SearchServiceServicer):
    """``tandem.v1.SearchService``: the gateway, i.e. :class:`HybridSearcher` on the network."""

    def __init__(self, searcher: HybridSearcher, executor: Executor | None = None) -> None:
        self.searcher = searcher
        self.executor = executor
        self._responses = RecentMemo()

    def _response(self, result: SearchResult) -> search_pb2.SearchResponse:
        """The proto for ``result``. A cache hit shares its hits list with every other hit of
        the same entry (see :meth:`tandem.search.memo.ResultMemo.peek`), so its message is built once and
        copied, with this request's ``took_ms``."""
        if not result.cache_hit:
            return result_to_proto(result)
        template = self._responses.get(id(result.hits), result.hits)
        if template is None:
            template = result_to_proto(result)
            self._responses.put(id(result.hits), result.hits, template)
        response = search_pb2.SearchResponse()
        response.CopyFrom(template)
        response.took_ms = result.took_ms
        return response

    async def Search(self, request: search_pb2.SearchRequest, context: grpc.aio.ServicerContext):
        # Before converting: a flood of filters must not cost event-loop time (issue 19).
        check_filter_count(len(request.filters), self.searcher.config)
        # A hit in an in-process cache is answered right here: handing it to a thread and back
        # costs more than the lookup (two event-loop wake-ups and GIL hand-offs per request).
        result = self.searcher.cached(request_from_proto(request))
        if isinstance(result, CacheMiss):
            deadline = remaining_s(context, self.searcher.config.deadline_s)
            loop = asyncio.get_running_loop()
            search = functools.partial(self.searcher.search, result)
            result = await loop.run_in_executor(self.executor, within_budget(search, deadline, "the search"))
        if result.cache_hit:
            SEARCH_CACHE_HITS.inc()
        for reason in result.degraded_reasons:
            SEARCH_DEGRADED.labels(reason.split(":", 1)[0]).inc()
        return self._response(result)


class RetrieverServicer(retriever_pb2_grpc.RetrieverServiceServicer):
    """``tandem.v1.RetrieverService`` over any :class:`Retriever`s (several in all-in-one).

    Sources listed in ``batched`` go through a :class:`MicroBatcher`; the others run one
    request per call in ``executor``.
    """

    def __init__(
        self,
        sources: Sequence[Retriever],
        *,
        executor: Executor | None = None,
        batched: Mapping[str, MicroBatcher] | None = None,
        max_k: int = 1000,
        max_queries: int = 64,
        max_query_chars: int = 1024,
    ) -> None:
        self.sources = {r.name: r for r in sources}
        if not self.sources:
            raise InvalidInput("`sources` is empty; a retriever service needs at least one source")
        self.executor = executor
        self.batched = dict(batched or {})
        self.max_k, self.max_queries, self.max_query_chars = max_k, max_queries, max_query_chars

    def _source(self, name: str) -> Retriever:
        if not name:
            if len(self.sources) == 1:
                return next(iter(self.sources.values()))
            raise InvalidInput(f"`source` is required: this server hosts {sorted(self.sources)}")
        if name not in self.sources:
            raise InvalidInput(f"`source` {name!r} is unknown; this server hosts {sorted(self.sources)}")
        return self.sources[name]

    async def Retrieve(self, request: retriever_pb2.RetrieveRequest, context: grpc.aio.ServicerContext):
        retriever = self._source(request.source)
        queries = list(request.queries)
        if not queries:
            raise InvalidInput("`queries` is empty")
        if len(queries) > self.max_queries:
            raise InvalidInput(f"`queries` has {len(queries)} entries; the limit is {self.max_queries}")
        if not 1 <= request.k <= self.max_k:
            raise InvalidInput(f"`k` must be in 1..{self.max_k}, got {request.k}")
        for i, q in enumerate(queries):
            if len(q) > self.max_query_chars:
                raise InvalidInput(f"`queries[{i}]` is {len(q)} characters; the limit is {self.max_query_chars}")
        validate_queries(queries, request.k)
        started = time.perf_counter()
        batcher = self.batched.get(retriever.name)
        if batcher is not None:
            results = await batcher.submit(queries, request.k)
        else:
            results = await asyncio.get_running_loop().run_in_executor(
                self.executor, retriever.retrieve, queries, request.k)
        RETRIEVE_LATENCY.labels(retriever.name).observe(time.perf_counter() - started)
        return retriever_pb2.RetrieveResponse(
            results=[retriever_pb2.HitList(hits=[retriever_pb2.RetrievedHit(item_id=h.item_id, score=h.score)
                                                  for h in hits]) for hits in results],
            source=retriever.name,
            version=retriever.version(),
        )

    async def Info(self, request: retriever_pb2.InfoRequest, context: grpc.aio.ServicerContext):
        return retriever_pb2.InfoResponse(
            sources=[retriever_pb2.SourceInfo(name=n, version=r.version(), score_names=list(r.score_names))
                     for n, r in self.sources.items()])

    async def Score(self, request: retriever_pb2.ScoreRequest, context: grpc.aio.ServicerContext):
        """One source's scores of the requested items (:meth:`Retriever.score_items`), in the executor."""
        retriever = self._source(request.source)
        if not retriever.score_names:
            raise InvalidInput(f"source {retriever.name!r} does not score items")
        if len(request.query) > self.max_query_chars:
            raise InvalidInput(f"`query` is {len(request.query)} characters; the limit is {self.max_query_chars}")
        ids = list(request.item_ids)
        validate_scoring(request.query, ids)
        names = tuple(retriever.score_names)
        got = await asyncio.get_running_loop().run_in_executor(self.executor, retriever.score_items,
                                                               request.query, ids)
        return retriever_pb2.ScoreResponse(
            names=list(names), source=retriever.name, version=retriever.version(),
            scores=[retriever_pb2.ItemScore(known=v is not None, values=list(v or ())) for v in got])

    async def Lookup(self, request: retriever_pb2.LookupRequest, context: grpc.aio.ServicerContext):
        """Stored fields of the requested items the source holds now (the gateway's live
        catalog, see :func:`tandem.search.catalog.known_hits`), read in the executor."""
        retriever = self._source(request.source)
        if not callable(getattr(retriever, "documents", None)):
            raise InvalidInput(f"source {retriever.name!r} stores no item fields")
        ids = list(request.item_ids)
        if len(ids) > self.max_k:
            raise InvalidInput(f"`item_ids` has {len(ids)} entries; the limit is {self.max_k}")
        found = await asyncio.get_running_loop().run_in_executor(self.executor, StoredFieldsLookup(retriever).lookup,
                                                                 ids)
        return retriever_pb2.LookupResponse(
            items=[meta_to_proto(i, found[i]) for i in dict.fromkeys(ids) if i in found],
            source=retriever.name, version=retriever.version())


class IntentServicer(intent_pb2_grpc.IntentServiceServicer):
    """``tandem.v1.IntentService`` over any :class:`IntentDecomposer`."""

    def __init__(self, decomposer: IntentDecomposer, max_query_chars: int = 1024) -> None:
        self.decomposer = decomposer
        self.max_query_chars = max_query_chars

    async def Decompose(self, request: intent_pb2.DecomposeRequest, context: grpc.aio.ServicerContext):
        if len(request.query) > self.max_query_chars:
            raise InvalidInput(f"`query` is {len(request.query)} characters; the limit is {self.max_query_chars}")
        if not request.query.strip():
            raise InvalidInput("`query` is empty; it needs at least one non-space character")
        intents = self.decomposer.decompose(request.query.strip())
        return intent_pb2.DecomposeResponse(intents=[intent_to_proto(i) for i in intents],
                                            version=self.decomposer.version())


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """``tandem.v1.AdminService``: versions, and reloads run off the event loop."""

    def __init__(self, versions: Callable[[], dict[str, str]], reload: Callable[[Sequence[str]], list[str]],
                 executor: Executor | None = None) -> None:
        self._versions, self._reload, self.executor = versions, reload, executor

    async def Versions(self, request: admin_pb2.VersionsRequest, context: grpc.aio.ServicerContext):
        loop = asyncio.get_running_loop()
        versions = await loop.run_in_executor(self.executor, self._versions)
        return admin_pb2.VersionsResponse(versions=versions)

    async def Reload(self, request: admin_pb2.ReloadRequest, context: grpc.aio.ServicerContext):
        loop = asyncio.get_running_loop()
        reloaded = await loop.run_in_executor(self.executor, self._reload, list(request.sources))
        versions = await loop.run_in_executor(self.executor, self._versions)
        return admin_pb2.VersionsResponse(versions=versions, reloaded=reloaded)


def retriever_reloader(sources: Sequence[Retriever]) -> Callable[[Sequence[str]], list[str]]:
    """A reload function for :class:`AdminServicer` over plain retrievers: it refreshes those
    that declare the capability (:attr:`~tandem.retriever.Retriever.refreshable`)."""
    names = {r.name for r in sources}

    def reload(wanted: Sequence[str]) -> list[str]:
        unknown = set(wanted) - names
        if unknown:
            raise InvalidInput(f"`sources` names unknown sources {sorted(unknown)}")
        return refresh_sources(sources, wanted)

    return reload
