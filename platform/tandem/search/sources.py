"""The searcher's sources: every retriever asked in parallel under one deadline, timed, and
wrapped for thread safety where a source needs it.

:func:`gather` is the retrieval half of a search: it runs each allowed source for every
intent, in a pool or (one deadline-aware source) on the caller's thread, and returns what
answered in time; the rest become degraded reasons and feed the circuit breakers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, wait
from typing import Any, Protocol, cast, runtime_checkable

from prometheus_client import Histogram

from tandem.errors import InvalidInput
from tandem.retriever import Hit, Retriever
from tandem.search.breakers import SourceBreakers

SOURCE_LATENCY = Histogram(
    "tandem_source_latency_seconds", "Retriever call latency seen by the hybrid searcher, by source and outcome.",
    ["source", "outcome"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def _timed(source: str, fn: Callable[..., Any], *args: Any) -> Any:
    started = time.perf_counter()
    outcome = "error"
    try:
        result = fn(*args)
        outcome = "ok"
        return result
    finally:
        SOURCE_LATENCY.labels(source, outcome).observe(time.perf_counter() - started)


@runtime_checkable
class DeadlineAware(Protocol):
    """A retriever that can bound its own call (remote ones pass it as the gRPC deadline)."""

    def retrieve_within(self, queries: Sequence[str], k: int, timeout_s: float) -> list[list[Hit]]:
        """:meth:`Retriever.retrieve` that gives up after ``timeout_s``."""


def _bounds_itself(r: Retriever) -> bool:
    # hasattr, not isinstance(r, DeadlineAware): a SerializedRetriever offers its inner
    # source's capabilities through __getattr__, which a static protocol check does not see.
    return hasattr(r, "retrieve_within")


def gather(sources: Sequence[Retriever], texts: Sequence[str], depth: int, caps: Mapping[str, int],
           pool: Executor, deadline: float, reserve_s: float, breakers: SourceBreakers,
           reasons: list[str]) -> list[tuple[Retriever, list[list[Hit]]]]:
    """Each source's hits for every text in ``texts`` (``min(depth, caps[name])`` per text), for
    the sources the breakers allow that answer before ``deadline - reserve_s`` (a
    :func:`time.monotonic` instant). Sources skipped, late or failing add to ``reasons``; a
    source refusing the request itself (:class:`InvalidInput`) raises it."""
    futures: dict[Future, Retriever] = {}
    active = [r for r in sources if breakers.allow(r.name, reasons)]
    # One source that bounds its own call (DeadlineAware) runs on this thread: a thread
    # hand-off less per search, which matters under GIL contention.
    inline = next((r for r in reversed(active) if _bounds_itself(r)), None)
    timeout = max(0.0, deadline - time.monotonic() - reserve_s)
    budget_ms = timeout * 1000
    for r in active:
        if r is inline:
            continue
        k = min(depth, caps.get(r.name, depth))
        if _bounds_itself(r):  # a remote call ends at the deadline instead of running on
            within = cast(DeadlineAware, r).retrieve_within  # _bounds_itself checked it
            futures[pool.submit(_timed, r.name, within, texts, k, max(timeout, 0.001))] = r
        else:
            futures[pool.submit(_timed, r.name, r.retrieve, texts, k)] = r
    if inline is not None:
        fut: Future = Future()
        k = min(depth, caps.get(inline.name, depth))
        try:
            within = cast(DeadlineAware, inline).retrieve_within
            fut.set_result(_timed(inline.name, within, texts, k, max(timeout, 0.001)))
        except Exception as failure:  # noqa: BLE001 - judged below with the pooled sources
            fut.set_exception(failure)
        futures[fut] = inline
    done, _ = wait(futures, timeout=max(0.0, deadline - time.monotonic() - reserve_s))
    breakers.settle({f: r.name for f, r in futures.items()}, done)

    answered: list[tuple[Retriever, list[list[Hit]]]] = []
    for fut, r in futures.items():
        if fut not in done:
            fut.cancel()
            reasons.append(f"{r.name}: no answer within the deadline ({budget_ms:.0f} ms)")
            continue
        exc = fut.exception()
        if exc is not None:
            if isinstance(exc, InvalidInput):
                raise exc
            reasons.append(f"{r.name}: {type(exc).__name__}: {exc}"[:300])
            continue
        answered.append((r, fut.result()))
    return answered


class SerializedRetriever(Retriever):
    """Runs every call into ``inner`` (retrieve, version, documents, ...) under one lock.

    For sources that are not safe to call from several threads at once: the hybrid path and
    the services call retrievers from thread pools. Costs parallelism on that source only.
    """

    def __init__(self, inner: Retriever) -> None:
        self.inner = inner
        self.name = inner.name
        self._lock = threading.Lock()

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """``inner.retrieve`` under the lock."""
        with self._lock:
            return self.inner.retrieve(queries, k)

    def version(self) -> str:
        """``inner.version`` without the lock: the :class:`Retriever` contract makes it cheap and
        thread-safe, and event loops call it (waiting here for a long retrieval would stall them)."""
        return self.inner.version()

    def refresh(self) -> bool:
        """``inner.refresh`` under the lock."""
        with self._lock:
            return self.inner.refresh()

    @property
    def refreshable(self) -> bool:
        """Whether ``inner`` can refresh."""
        return self.inner.refreshable

    def close(self) -> None:
        """``inner.close`` under the lock."""
        with self._lock:
            self.inner.close()

    def __getattr__(self, attr: str) -> Any:
        # Optional capabilities (documents, reload, upsert...) keep working, under the lock.
        value = getattr(self.inner, attr)
        if not callable(value):
            return value

        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return locked


__all__ = ["SOURCE_LATENCY", "DeadlineAware", "SerializedRetriever", "gather"]
