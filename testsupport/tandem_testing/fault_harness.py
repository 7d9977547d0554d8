"""What every fault scenario shares: the result row, a search load, loopback gateway and retriever servers.

:class:`ScenarioResult` is one row of ``bench.faults`` for every scenario (serving ones in
:mod:`tandem_testing.faults`, ingest, feedback and bounded-queue ones in their own modules);
the column definitions are in :mod:`tandem_testing.faults`. :class:`SearchLoad` searches
through a gateway from worker threads and records each search as the client saw it, so a
scenario can count failures and time recovery; :func:`request_result` turns those
outcomes into a row. :func:`gateway` and :func:`retriever_service` run real gRPC servers
on loopback around in-process retrievers.

They drive gRPC, so they import :mod:`tandem_services` lazily, inside the functions: this
module is test support, and core code never imports it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tandem.retriever import Retriever
from tandem_testing.tiny_catalog import tiny_catalog

QUERIES = [
    "cordless drill", "hammer drill", "circular saw", "claw hammer", "screwdriver set", "interior paint white",
    "paint roller", "painters tape", "led light bulb", "ceiling light", "flood light", "garden hose",
    "string trimmer", "lawn mower", "kitchen faucet", "bathroom faucet", "toilet", "wood screws",
    "impact driver", "drill bits", "hand saw", "exterior paint", "motion sensor light", "stainless faucet",
]  # fmt: skip


@dataclass
class ScenarioResult:
    """One row of the fault report."""

    scenario: str
    unit: str
    """``events`` or ``requests``."""
    count: int
    failures: int
    lost: int
    duplicated: int
    recovery_s: float | None
    details: dict[str, Any] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        """The JSON entry of ``bench.faults``."""
        return {self.unit: self.count, "failures": self.failures, "lost": self.lost,
                "duplicated": self.duplicated, "recovery_s": self.recovery_s, **self.details}  # fmt: skip


# --------------------------------------------------------------------------- search load


@dataclass
class Outcome:
    """One search as the client saw it."""

    started: float
    seconds: float
    ok: bool
    answered: bool
    degraded: bool = False
    cache_hit: bool = False
    hits: int = 0
    duplicate_hits: bool = False
    versions: dict[str, str] = field(default_factory=dict)
    error: str = ""


class SearchLoad:
    """Searches from ``workers`` threads until :meth:`stop`; every outcome is recorded.

    ``vary`` appends a counter to each query so no answer comes from the cache (the
    generative scenarios must see the source itself); otherwise queries cycle over
    :data:`QUERIES`, which makes most searches cache hits.
    """

    def __init__(self, address: str, *, workers: int = 2, timeout_s: float = 2.0, vary: bool = False,
                 pause_s: float = 0.0) -> None:
        self.address, self.workers, self.timeout_s, self.vary, self.pause_s = address, workers, timeout_s, vary, pause_s
        self.outcomes: list[Outcome] = []
        self.reasons: list[str] = []
        """``degraded_reasons`` of the first degraded answer (for reports)."""
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._n = 0
        self._mu = threading.Lock()

    def _next_query(self) -> str:
        with self._mu:
            self._n += 1
            n = self._n
        q = QUERIES[n % len(QUERIES)]
        return f"{q} {n}" if self.vary else q

    def _run(self) -> None:
        import grpc

        from tandem_services.client import SearchClient

        with SearchClient(self.address, timeout_s=self.timeout_s) as client:
            while not self._stop.is_set():
                query = self._next_query()
                t0 = time.monotonic()
                try:
                    r = client.search(query, top_k=10)
                except grpc.RpcError as e:
                    code = e.code()
                    answered = code not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
                    self._record(Outcome(t0, time.monotonic() - t0, ok=False, answered=answered,
                                         error=f"{code.name}: {e.details()}"))
                    continue
                ids = [h.item_id for h in r.hits]
                if r.degraded and not self.reasons:
                    self.reasons = list(r.degraded_reasons)
                self._record(Outcome(t0, time.monotonic() - t0, ok=bool(ids), answered=True, degraded=r.degraded,
                                     cache_hit=r.cache_hit, hits=len(ids), duplicate_hits=len(set(ids)) != len(ids),
                                     versions=dict(r.versions), error="" if ids else "no hits"))
                if self.pause_s:
                    time.sleep(self.pause_s)

    def _record(self, o: Outcome) -> None:
        with self._mu:
            self.outcomes.append(o)

    def start(self) -> SearchLoad:
        """Start the worker threads."""
        self._threads = [threading.Thread(target=self._run, name=f"search-load-{i}", daemon=True)
                         for i in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[Outcome]:
        """Stop, join and return every outcome in start order."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return sorted(self.outcomes, key=lambda o: o.started)

    def count(self) -> int:
        """Searches finished so far."""
        with self._mu:
            return len(self.outcomes)

    def wait_for(self, pred: Callable[[Outcome], bool], after: float, timeout_s: float) -> float | None:
        """Seconds from ``after`` until the first search started after it satisfies ``pred``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._mu:
                hits = [o.started for o in self.outcomes if o.started >= after and pred(o)]
            if hits:
                return min(hits) - after
            time.sleep(0.02)
        return None

    def wait_count(self, n: int, timeout_s: float) -> None:
        """Block until ``n`` searches have finished (or ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while self.count() < n and time.monotonic() < deadline:
            time.sleep(0.02)


def request_result(name: str, outcomes: Sequence[Outcome], recovery_s: float | None, *,
                    late_after_s: float | None = None, **details: Any) -> ScenarioResult:
    """The row of a serving scenario: failed, unanswered and duplicate-listing searches over ``outcomes``
    (answers slower than ``late_after_s`` fail too), plus degraded/cache-hit counts, p99 and ``details``."""
    late = [o for o in outcomes if late_after_s is not None and o.answered and o.seconds > late_after_s]
    errors = sorted({o.error for o in outcomes if o.error})[:5]
    lat = sorted(o.seconds for o in outcomes)
    return ScenarioResult(
        name, "requests", len(outcomes),
        failures=sum(not o.ok for o in outcomes) + len(late),
        lost=sum(not o.answered for o in outcomes),
        duplicated=sum(o.duplicate_hits for o in outcomes),
        recovery_s=None if recovery_s is None else round(recovery_s, 3),
        details={"degraded": sum(o.degraded for o in outcomes), "cache_hits": sum(o.cache_hit for o in outcomes),
                 "p99_ms": round(lat[int(0.99 * (len(lat) - 1))] * 1000, 1) if lat else None,
                 **({"late": len(late)} if late_after_s is not None else {}),
                 **({"errors": errors} if errors else {}), **details},
    )  # fmt: skip


@contextmanager
def gateway(retrievers: Sequence[Retriever], *, cache: Any = None, deadline_s: float = 1.0) -> Iterator[Any]:
    """A real gateway (gRPC, loopback) over ``retrievers``; yields its BackgroundServer."""
    from tandem.search.catalog import InMemoryCatalog
    from tandem.search.orchestrator import HybridSearcher
    from tandem.search.request import SearchConfig
    from tandem_services.app import gateway_server
    from tandem_services.runner import BackgroundServer
    from tandem_services.server import ServerOptions

    searcher = HybridSearcher(list(retrievers), cache=cache, catalog=InMemoryCatalog(tiny_catalog()),
                              config=SearchConfig(deadline_s=deadline_s))
    srv = BackgroundServer(lambda: gateway_server(searcher, ServerOptions(drain_s=0.0, grace_s=1.0)))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@contextmanager
def retriever_service(retriever: Retriever) -> Iterator[Any]:
    """``retriever`` behind a real RetrieverService on loopback; yields its BackgroundServer."""
    from tandem_services.app import retriever_server
    from tandem_services.runner import BackgroundServer
    from tandem_services.server import ServerOptions

    srv = BackgroundServer(lambda: retriever_server([retriever], ServerOptions(drain_s=0.0, grace_s=1.0)))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
