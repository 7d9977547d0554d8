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
The result row, the search load and the loopback servers they share with the other fault
modules are in :mod:`tandem_testing.fault_harness`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tandem.catalog.item import Item
from tandem.retriever import Hit, Retriever
from tandem_testing.fault_harness import ScenarioResult, SearchLoad, gateway, request_result, retriever_service
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]

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
            with gateway([bm25, gen], cache=cache) as gw:
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
    return request_result("redis_restart", outcomes, recovery, outage_s=round(back - t_down, 3))


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
        with gateway([TermOverlapRetriever(items, name="bm25"), remote]) as gw:
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
    return request_result("generative_killed", outcomes, recovery, down_s=round(back - t_kill, 3),
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
        with retriever_service(retriever) as svc:
            remote = RemoteRetriever(svc.address, "generative", version_ttl_s=0.1)
            try:
                with gateway([TermOverlapRetriever(items, name="bm25"), remote]) as gw, \
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
    result = request_result("corrupt_artifact", outcomes, recovery, refused=int(refusals), logged=logged,
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
    with retriever_service(slow) as svc:
        remote = RemoteRetriever(svc.address, "generative", version_ttl_s=1.0)
        try:
            with gateway([TermOverlapRetriever(items, name="bm25"), remote], deadline_s=deadline_s) as gw:
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
    return request_result(
        "slow_retriever", outcomes, recovery, late_after_s=deadline_s + allowance_s,
        deadline_ms=deadline_s * 1000, degraded_while_slow=sum(o.degraded for o in during),
        searches_while_slow=len(during),
        max_ms_while_slow=round(max((o.seconds for o in during), default=0.0) * 1000, 1),
    )  # fmt: skip
