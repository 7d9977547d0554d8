"""Assembling servers for each role: gateway, retriever (sparse/generative), intent, all-in-one."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tandem.canary.arms import Arms
from tandem.errors import InvalidInput
from tandem.feedback.stream import FeedbackSink
from tandem.intent.base import IntentDecomposer
from tandem.retriever import Retriever
from tandem.search.orchestrator import HybridSearcher
from tandem.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    canary_pb2,
    canary_pb2_grpc,
    feedback_pb2,
    feedback_pb2_grpc,
    intent_pb2,
    intent_pb2_grpc,
    retriever_pb2,
    retriever_pb2_grpc,
    search_pb2,
    search_pb2_grpc,
)
from tandem_services.arms import ArmedSearchServicer, ServedLog
from tandem_services.batching import MicroBatcher
from tandem_services.canary import CanaryServicer
from tandem_services.executors import BoundedExecutor
from tandem_services.feedback import FeedbackServicer
from tandem_services.server import ServerOptions, Service, TandemServer
from tandem_services.servicers import (
    AdminServicer,
    IntentServicer,
    RetrieverServicer,
    SearchServicer,
    retriever_reloader,
)

SEARCH = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
RETRIEVER = retriever_pb2.DESCRIPTOR.services_by_name["RetrieverService"].full_name
INTENT = intent_pb2.DESCRIPTOR.services_by_name["IntentService"].full_name
ADMIN = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
FEEDBACK = feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"].full_name
CANARY = canary_pb2.DESCRIPTOR.services_by_name["CanaryService"].full_name


class BatchOptions(BaseModel):
    """Micro-batching of a model-backed retriever."""

    model_config = ConfigDict(extra="forbid")

    max_batch: int = Field(default=32, ge=1)
    """Most queries in one forward pass."""
    max_wait_ms: float = Field(default=5.0, ge=0)
    """Longest a request waits for others to share its batch."""


def _executor(workers: int, prefix: str) -> ThreadPoolExecutor:
    """Every server's worker pool: a bounded backlog (see :mod:`tandem_services.executors`)."""
    return BoundedExecutor(workers, thread_name_prefix=prefix)


def _admin_for_sources(sources: Sequence[Retriever], executor) -> Service:
    def versions() -> dict[str, str]:
        return {r.name: r.version() for r in sources}
    return Service(AdminServicer(versions, retriever_reloader(sources), executor),
                   admin_pb2_grpc.add_AdminServiceServicer_to_server, ADMIN)


def retriever_services(sources: Sequence[Retriever], batch: BatchOptions | None, batched: Sequence[str],
                       executor: ThreadPoolExecutor) -> tuple[list[Service], list[MicroBatcher]]:
    """RetrieverService (micro-batching the sources named in ``batched``) + AdminService, and
    the batchers (to close on shutdown)."""
    batchers = {
        r.name: MicroBatcher(r.retrieve, max_batch=batch.max_batch, max_wait_s=batch.max_wait_ms / 1000,
                             executor=executor, source=r.name)
        for r in sources if batch is not None and r.name in batched
    }
    servicer = RetrieverServicer(sources, executor=executor, batched=batchers)
    return ([Service(servicer, retriever_pb2_grpc.add_RetrieverServiceServicer_to_server, RETRIEVER),
             _admin_for_sources(sources, executor)], list(batchers.values()))


def retriever_server(sources: Sequence[Retriever], options: ServerOptions | None = None, *,
                     batch: BatchOptions | None = None, workers: int = 8) -> TandemServer:
    """A sparse or generative service: any retrievers behind ``tandem.v1.RetrieverService``.

    With ``batch``, every source is micro-batched (the generative service's mode).
    """
    executor = _executor(workers, "tandem-retrieve")
    services, batchers = retriever_services(sources, batch, [r.name for r in sources], executor)
    return TandemServer(services, options, on_stop=[*[b.close for b in batchers],
                                                    lambda: executor.shutdown(wait=False),
                                                    *[r.close for r in sources]])


def front_services(searcher: HybridSearcher, executor: ThreadPoolExecutor, *, candidate: HybridSearcher | None,
                   arms: Arms | None, feedback: FeedbackSink | None, observers: Sequence = ()) -> list[Service]:
    """SearchService over the current (and candidate) searcher, routed by ``arms``, and the
    FeedbackService that labels events with the arm this process served (no sink: UNAVAILABLE),
    and the CanaryService that sets the share (admin). ``observers`` see every answered search
    (:class:`tandem_services.learning.SearchObserver`: failed searches, the request log)."""
    served = ServedLog()
    search = ArmedSearchServicer(SearchServicer(searcher, executor),
                                 SearchServicer(candidate, executor) if candidate is not None else None, arms, served)
    if observers:
        from tandem_services.learning import ObservedSearchServicer

        search = ObservedSearchServicer(search, observers)  # type: ignore[assignment]
    return [Service(search, search_pb2_grpc.add_SearchServiceServicer_to_server, SEARCH),
            Service(FeedbackServicer(feedback, served, executor, search.arms),
                    feedback_pb2_grpc.add_FeedbackServiceServicer_to_server, FEEDBACK),
            Service(CanaryServicer(search.arms, candidate is not None),
                    canary_pb2_grpc.add_CanaryServiceServicer_to_server, CANARY)]


def _closers(candidate: HybridSearcher | None, feedback: FeedbackSink | None, observers: Sequence = ()) -> list:
    return [c.close for c in (candidate, feedback, *observers) if c is not None]


def gateway_server(searcher: HybridSearcher, options: ServerOptions | None = None, *,
                   workers: int = 16, candidate: HybridSearcher | None = None, arms: Arms | None = None,
                   feedback: FeedbackSink | None = None, observers: Sequence = ()) -> TandemServer:
    """The gateway: SearchService + FeedbackService + AdminService over ``searcher`` (whose
    sources may be remote); with ``candidate``, ``arms`` routes a share of users to it
    (:mod:`tandem_services.arms`); ``observers`` see every answered search."""
    executor = _executor(workers, "tandem-gateway")
    services = [
        *front_services(searcher, executor, candidate=candidate, arms=arms, feedback=feedback, observers=observers),
        Service(AdminServicer(searcher.versions, searcher.reload, executor),
                admin_pb2_grpc.add_AdminServiceServicer_to_server, ADMIN),
    ]
    return TandemServer(services, options, on_stop=[searcher.close, lambda: executor.shutdown(wait=False),
                                                    *_closers(candidate, feedback, observers)])


def intent_server(decomposer: IntentDecomposer, options: ServerOptions | None = None) -> TandemServer:
    """The intent service over ``decomposer``."""
    return TandemServer([Service(IntentServicer(decomposer), intent_pb2_grpc.add_IntentServiceServicer_to_server,
                                 INTENT)], options)


def all_in_one_server(searcher: HybridSearcher, options: ServerOptions | None = None, *,
                      batch: BatchOptions | None = None, batched: Sequence[str] = (),
                      workers: int = 16, candidate: HybridSearcher | None = None, arms: Arms | None = None,
                      feedback: FeedbackSink | None = None, observers: Sequence = ()) -> TandemServer:
    """Every service in one process (the embedded default): the gateway calls its retrievers
    in-process, and the same retrievers are also exposed as ``RetrieverService`` (by ``source``)
    and the decomposer as ``IntentService``."""
    executor = _executor(workers, "tandem-all")
    (retriever_svc, _), batchers = retriever_services(searcher.retrievers, batch, batched, executor)
    services = [
        *front_services(searcher, executor, candidate=candidate, arms=arms, feedback=feedback, observers=observers),
        retriever_svc,
        Service(IntentServicer(searcher.intents), intent_pb2_grpc.add_IntentServiceServicer_to_server, INTENT),
        Service(AdminServicer(searcher.versions, searcher.reload, executor),
                admin_pb2_grpc.add_AdminServiceServicer_to_server, ADMIN),
    ]
    return TandemServer(services, options, on_stop=[*[b.close for b in batchers], searcher.close,
                                                    lambda: executor.shutdown(wait=False),
                                                    *[r.close for r in searcher.retrievers],
                                                    *_closers(candidate, feedback, observers)])


def load_factory(spec: str, *args: Any) -> Any:
    """Call ``module:callable`` with ``args`` (how a retriever or decomposer is plugged in)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise InvalidInput(f"`factory` must look like package.module:callable, got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(f"`factory` {spec!r} cannot be loaded: {exc}") from None
    return fn(*args)


SPARSE_FOLLOW_S = 0.25
"""How often a served BM25 index checks for a newer commit by the ingest writer."""


def load_sparse(index_dir: str, name: str = "bm25", follow_s: float | None = SPARSE_FOLLOW_S, *,
                wait_for_index: bool = False) -> Retriever:
    """The BM25 retriever over a Lucene index built by ``tandem index``, read-only, following
    the writer's commits every ``follow_s`` seconds (``None``: only on an Admin ``Reload``).

    ``wait_for_index``: when the index does not exist yet (the ingest consumer creates it on
    its first events), serve UNAVAILABLE until it does instead of failing to start
    (:class:`~tandem_services.awaited.AwaitedIndex`)."""
    from tandem.jvm import ensure_jvm

    ensure_jvm()
    if wait_for_index:
        from pathlib import Path

        from tandem_services.awaited import AwaitedIndex, index_exists

        if not index_exists(Path(index_dir)):
            return AwaitedIndex(index_dir, lambda: load_sparse(index_dir, name, follow_s), name=name)
    from tandem.sparse import SparseRetriever

    retriever = SparseRetriever(index_dir, writable=False, follow_s=follow_s)
    retriever.name = name
    # Safe to share: SparseRetriever runs every JVM call on its one JVM thread.
    return retriever


def load_generative(model_dir: str | None, factory: str | None, *args: Any, adapter: str | None = None,
                    registry: str | None = None, poll_s: float = 30.0, shard: str | None = None) -> Retriever:
    """The generative retriever: from ``factory`` if given; else the registry's current base model
    and adapter, hot-reloaded when the pointers move (``registry``, polled every ``poll_s``);
    else the model folder ``model_dir`` (with ``adapter`` merged in when given). ``shard``
    (``"i/N"``): only shard i of N of that folder (:mod:`tandem_services.shards`)."""
    if shard:
        from tandem_services.shards import load_shard

        return load_shard(model_dir, shard, adapter=adapter, registry=registry, factory=factory)
    if factory:
        return load_factory(factory, *args)
    if registry:
        if model_dir or adapter:
            raise InvalidInput("give `registry` or `model`/`adapter`, not both: the registry names the model")
        from tandem.generative.reload import HotSwapRetriever
        from tandem.registry.serving import ServingRegistry

        # A corrupt current version falls back to the last good one at start-up too (logged).
        return HotSwapRetriever(ServingRegistry(registry), interval_s=poll_s)
    from tandem.generative.loading import load_retriever

    if not model_dir:
        raise InvalidInput("`model` (or `registry`) is required for the generative service")
    if adapter:
        return load_retriever(model_dir, adapter=adapter)
    return load_retriever(model_dir)
