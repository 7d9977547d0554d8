"""Fault scenarios against real servers on loopback, each a bounded run that stops by itself.

Shared by ``python -m bench.faults`` (the measured report) and
``tests/integration/test_faults.py`` (the same scenarios at small size, asserting nothing is
lost, doubled or failed). Every scenario returns a :class:`ScenarioResult`. The serving
scenarios are here; the ingest ones (Kafka, consumer) in :mod:`tandem_testing.ingest_faults`.

* **ingest scenarios** (``events``): Kafka broker restarted while events are published and
  consumed; ingest consumer SIGKILLed mid-batch and restarted. ``lost`` = published
  ``(item_id, latest version)`` states missing from the catalog store or the Lucene index
  at the end; ``duplicated`` = extra index documents plus applied-log rows beyond the
  distinct events published (an effect applied twice); ``failures`` = events the producer
  could not publish after retrying plus events dead-lettered although valid.
* **serving scenarios** (``requests``): searches through a real gateway while Redis
  restarts, the generative service is SIGKILLed and restarted, a registry artifact with a
  wrong checksum is offered, or a retriever is slow. ``failures`` = searches that raised or
  came back empty (or, for the slow retriever, answered after the deadline); ``lost`` =
  searches that got no answer at all (deadline exceeded or unavailable at the client);
  ``duplicated`` = answers listing one item twice.

``recovery_s``: seconds from the end of the fault (server answering again, good artifact
promoted, slowness removed) until the system works as before it (ingest applies new
events again; searches are answered non-degraded, or from the cache again for Redis).

The serving scenarios drive the gRPC gateway, so they import :mod:`tandem_services` —
lazily, inside the functions: this module is test support, and core code never imports it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem.catalog.item import Item
from tandem.retriever import Hit, Retriever
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]

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


def _request_result(name: str, outcomes: Sequence[Outcome], recovery_s: float | None, *,
                    late_after_s: float | None = None, **details: Any) -> ScenarioResult:
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
def _gateway(retrievers: Sequence[Retriever], *, cache: Any = None, deadline_s: float = 1.0) -> Iterator[Any]:
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
def _retriever_service(retriever: Retriever) -> Iterator[Any]:
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


# --------------------------------------------------------------------------- (c) Redis restart


def redis_restart(seconds: float = 6.0, workers: int = 2) -> ScenarioResult:
    """Searches (mostly cache hits) while the Redis cache is restarted (empty afterwards).

    Searches must all succeed (the cache degrades to misses behind its circuit breaker);
    recovery = Redis back → the first cache hit again.
    """
    from tandem.cache import make_cache
    from tandem_testing.infra import RedisServer

    items = tiny_catalog()
    with RedisServer() as redis:
        cache = make_cache(redis.url)
        try:
            bm25 = TermOverlapRetriever(items, name="bm25")
            gen = TermOverlapRetriever(items, name="generative")
            with _gateway([bm25, gen], cache=cache) as gw:
                load = SearchLoad(gw.address, workers=workers).start()
                time.sleep(seconds / 3)
                t_down = time.monotonic()
                redis.restart()  # from this (the main) thread: the server dies with its starter thread
                back = time.monotonic()
                recovery = load.wait_for(lambda o: o.cache_hit, back, timeout_s=30.0)
                time.sleep(max(0.0, seconds - (time.monotonic() - t_down) - seconds / 3))
                outcomes = load.stop()
        finally:
            cache.close()
    return _request_result("redis_restart", outcomes, recovery, outage_s=round(back - t_down, 3))


# --------------------------------------------------------------------------- (d) generative killed


def _spawn_generative(port: int, items_file: Path, log_file: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "tandem_app.cli", "serve", "generative", "--factory",
           "tandem_testing.term_overlap:from_jsonl", "--factory-arg", str(items_file), "--port", str(port),
           "--log-level", "WARNING", "--max-wait-ms", "1"]  # fmt: skip
    with log_file.open("ab") as out:
        return subprocess.Popen(cmd, cwd=_REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_serving(address: str, proc: subprocess.Popen[bytes] | None, timeout_s: float = 60.0) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tandem.errors import Unavailable

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Unavailable(f"server for {address} exited with {proc.returncode}")
        # A fresh channel per try: a reused one would sit in gRPC's reconnect backoff and
        # notice the server up to seconds late, which would shorten the measured recovery.
        with grpc.insecure_channel(address) as ch:
            try:
                reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
        time.sleep(0.05)
    raise Unavailable(f"{address} not serving after {timeout_s:.0f} s")


def generative_killed(work: Path, seconds: float = 8.0, outage_s: float = 2.0, workers: int = 2) -> ScenarioResult:
    """Searches while the generative service (a separate process) is SIGKILLed, then restarted.

    No search may fail: while it is down answers are BM25-only and ``degraded``; recovery =
    service serving again → first non-degraded answer.
    """
    from tandem_testing.infra import free_port
    from tandem_services.client import RemoteRetriever

    work.mkdir(parents=True, exist_ok=True)
    items = tiny_catalog()
    items_file = work / "items.jsonl"
    items_file.write_text("".join(i.model_dump_json() + "\n" for i in items))
    port = free_port()
    address = f"127.0.0.1:{port}"
    log_file = work / "generative.log"
    proc = _spawn_generative(port, items_file, log_file)
    remote = None
    try:
        _wait_serving(address, proc)
        remote = RemoteRetriever(address, "generative", version_ttl_s=0.2)
        with _gateway([TermOverlapRetriever(items, name="bm25"), remote]) as gw:
            load = SearchLoad(gw.address, workers=workers, vary=True).start()
            time.sleep((seconds - outage_s) / 2)
            t_kill = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            time.sleep(outage_s)
            respawned = time.monotonic()  # nothing can answer for the generative source before this
            proc = _spawn_generative(port, items_file, log_file)
            _wait_serving(address, proc)
            back = time.monotonic()
            recovery = load.wait_for(lambda o: o.ok and not o.degraded, back, timeout_s=30.0)
            time.sleep(max(0.0, (seconds - outage_s) / 2 - (time.monotonic() - back)))
            outcomes = load.stop()
    finally:
        if remote is not None:
            remote.close()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
    # Searches begun after the kill and answered before the new process was launched:
    # each must be degraded (BM25 only), none may fail.
    during = [o for o in outcomes if o.started > t_kill + 0.1 and o.started + o.seconds < respawned]
    before = [o for o in outcomes if o.started < t_kill]
    return _request_result("generative_killed", outcomes, recovery, down_s=round(back - t_kill, 3),
                           degraded_before_kill=sum(o.degraded for o in before),
                           degraded_while_down=sum(o.degraded for o in during), searches_while_down=len(during))


# --------------------------------------------------------------------------- (e) corrupt artifact


class RegistryRetriever(Retriever):
    """A retriever whose items come from the registry's ``current`` artifact of ``kind``.

    ``reload()`` re-resolves ``current`` through :meth:`Registry.resolve_current`, which
    verifies every checksum and falls back to the newest good version; the version served is
    the artifact version, so a refused artifact shows as "nothing changed".
    """

    def __init__(self, registry: Any, kind: str = "index", name: str = "generative") -> None:
        self.registry, self.kind, self.name = registry, kind, name
        self._version = ""
        self._inner: TermOverlapRetriever | None = None
        self.reload()

    def reload(self) -> None:
        """Serve the verified current artifact (unchanged when it is the one already served)."""
        art = self.registry.resolve_current(self.kind)
        if art.manifest.version == self._version:
            return
        with (Path(art.local_path) / "items.jsonl").open(encoding="utf-8") as fh:
            items = [Item.model_validate_json(line) for line in fh if line.strip()]
        self._inner = TermOverlapRetriever(items, name=self.name, version=art.manifest.version)
        self._version = art.manifest.version

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """See :meth:`Retriever.retrieve`."""
        assert self._inner is not None  # set by the constructor; not user input
        return self._inner.retrieve(queries, k)

    def version(self) -> str:
        """The artifact version being served."""
        return self._version


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def corrupt_artifact(work: Path, seconds: float = 4.0, workers: int = 2) -> ScenarioResult:
    """A promoted artifact whose file no longer matches its checksum is offered to a live service.

    The reload must refuse it (metric ``tandem_registry_corrupt_artifacts_total`` + an error
    log naming it), the previous version must keep serving with no failed search, and a good
    version promoted afterwards must be picked up: recovery = its reload → first answer
    carrying its version.
    """
    import grpc
    from prometheus_client import REGISTRY

    from tandem.registry import Registry
    from tandem.v1 import admin_pb2, admin_pb2_grpc
    from tandem_services.client import RemoteRetriever

    items = tiny_catalog()
    reg = Registry(work / "registry")

    def publish(tag: str) -> str:
        src = work / f"artifact-{tag}"
        src.mkdir(parents=True, exist_ok=True)
        (src / "items.jsonl").write_text("".join(i.model_dump_json() + "\n" for i in items))
        version = reg.publish("index", src, metrics={"items": len(items)})
        reg.promote("index", version)
        return version

    def metric() -> float:
        return REGISTRY.get_sample_value("tandem_registry_corrupt_artifacts_total", {"kind": "index"}) or 0.0

    v1 = publish("v1")
    capture = _Capture()
    logging.getLogger("tandem.registry").addHandler(capture)
    retriever = RegistryRetriever(reg)
    try:
        with _retriever_service(retriever) as svc:
            remote = RemoteRetriever(svc.address, "generative", version_ttl_s=0.1)
            try:
                with _gateway([TermOverlapRetriever(items, name="bm25"), remote]) as gw, \
                        grpc.insecure_channel(svc.address) as ch:
                    admin = admin_pb2_grpc.AdminServiceStub(ch)
                    load = SearchLoad(gw.address, workers=workers, vary=True).start()
                    time.sleep(seconds / 3)
                    v2 = publish("v2")  # verified at promotion, then damaged on disk (bit rot, tampering)
                    damaged = Path(reg.get("index", v2).local_path) / "items.jsonl"
                    damaged.write_text(damaged.read_text().replace("Drill", "Dril1"))
                    before = metric()
                    reply = admin.Reload(admin_pb2.ReloadRequest(), timeout=10)
                    served_after_refusal = reply.versions["generative"]
                    refusals = metric() - before
                    time.sleep(seconds / 3)
                    v3 = publish("v3")
                    t_good = time.monotonic()
                    admin.Reload(admin_pb2.ReloadRequest(), timeout=10)
                    recovery = load.wait_for(lambda o: o.versions.get("generative") == v3, t_good, timeout_s=30.0)
                    time.sleep(seconds / 3)
                    outcomes = load.stop()
            finally:
                remote.close()
    finally:
        logging.getLogger("tandem.registry").removeHandler(capture)
    logged = any(v2 in line and "refusing" in line for line in capture.lines)
    wrong = sum(o.versions.get("generative") == v2 for o in outcomes)
    result = _request_result("corrupt_artifact", outcomes, recovery, refused=int(refusals), logged=logged,
                             kept_serving=served_after_refusal == v1, served_corrupt=wrong)
    # A corrupt artifact that got served, or a refusal nobody can see, is a failure too.
    result.failures += wrong + (served_after_refusal != v1) + (refusals < 1) + (not logged)
    return result


# --------------------------------------------------------------------------- (f) slow retriever


def slow_retriever(seconds: float = 4.0, deadline_s: float = 0.3, slow_s: float = 1.0,
                   workers: int = 2) -> ScenarioResult:
    """The generative service answers after ``slow_s`` > the search deadline ``deadline_s``.

    Every search must still answer within the deadline (plus a scheduling allowance on a
    loaded machine) with BM25's hits and ``degraded``; the answers that come later count as
    failures. Then the slowness goes away: recovery = first non-degraded answer.
    """
    from tandem_services.client import RemoteRetriever

    items = tiny_catalog()
    slow = TermOverlapRetriever(items, name="generative", delay_s=slow_s)
    allowance_s = 0.5
    with _retriever_service(slow) as svc:
        remote = RemoteRetriever(svc.address, "generative", version_ttl_s=1.0)
        try:
            with _gateway([TermOverlapRetriever(items, name="bm25"), remote], deadline_s=deadline_s) as gw:
                load = SearchLoad(gw.address, workers=workers, vary=True, timeout_s=deadline_s + 2.0).start()
                time.sleep(seconds / 2)
                slow.delay_s = 0.0
                fixed = time.monotonic()
                recovery = load.wait_for(lambda o: o.ok and not o.degraded, fixed, timeout_s=30.0)
                time.sleep(max(0.0, seconds / 2 - (time.monotonic() - fixed)))
                outcomes = load.stop()
        finally:
            remote.close()
    during = [o for o in outcomes if o.started < fixed - slow_s]
    return _request_result(
        "slow_retriever", outcomes, recovery, late_after_s=deadline_s + allowance_s,
        deadline_ms=deadline_s * 1000, degraded_while_slow=sum(o.degraded for o in during),
        searches_while_slow=len(during),
        max_ms_while_slow=round(max((o.seconds for o in during), default=0.0) * 1000, 1),
    )  # fmt: skip
