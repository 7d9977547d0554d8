"""Issue 19's fault scenarios: nothing one record or one request sends can stop the stream or
burn the gateway. See :mod:`tandem_testing.faults` for the result type and the columns.

Ingest (a real Kafka broker, the ingest consumer in a thread, store only):

* ``poison_version`` — records whose ``version`` no store can hold (2**63, 2**64) among good
  events: dead-lettered, the rest applied, the stream still moving afterwards;
* ``oversized_dead_letter`` — a malformed record larger than the dead-letter topic accepts:
  the letter goes without its value, the stream moves on.

Gateway (a real gRPC gateway on loopback, term-overlap sources):

* ``filter_flood`` — ~1 MiB requests of 55,000 filters beside normal searches: refused with
  INVALID_ARGUMENT, normal searches unharmed;
* ``topk_inflation`` — ``top_k=1000`` searches beside ``top_k=10`` ones through a
  micro-batched generative service: no batch ever runs deeper than the depth cap;
* ``intent_down`` — the intent service unreachable: every search answers, degraded to the
  whole query.

``failures`` counts what the scenario must never see (a stopped consumer, a lost letter, a
failed normal search, a batch over the cap); ``lost``/``duplicated`` are the ingest audit's
(:func:`tandem_testing.ingest_faults.audit_ingest`), 0 by construction for the gateway ones.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tandem_testing.fault_harness import ScenarioResult
from tandem_testing.ingest_faults import _wait, audit_ingest, expected_state, store_seq, synthetic_events
from tandem_testing.topic_reader import read_topic

FLOOD_FILTERS = 55_000
"""Filters in one flood request: about 1 MiB on the wire (issue 19's example)."""


def _ingest_scenario(name: str, work: Path, bootstrap: str, bad: list[tuple[bytes, bytes]],
                     dlq_configs: dict[str, str] | None = None, n_items: int = 100) -> ScenarioResult:
    """Publish good events with ``bad`` records in the middle, consume, then publish more and
    time how long the consumer takes to apply them (``recovery_s``: the stream still moves)."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    from tandem.streams.apply import Applier
    from tandem.streams.config import StreamSettings
    from tandem.streams.consumer import DLQ_TRUNCATED, IngestConsumer
    from tandem.streams.poisoning import PoisoningPolicy
    from tandem.streams.producer import EventProducer
    from tandem.streams.store import CatalogStore

    topic = f"faults.{name}.{uuid.uuid4().hex[:6]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(topic, 3, 1), NewTopic(topic + ".dlq", 1, 1, topic_configs=dlq_configs or {})])
    admin.close()
    settings = StreamSettings(kafka_bootstrap=bootstrap, items_topic=topic, dlq_topic=topic + ".dlq")
    before, after = synthetic_events(n_items), synthetic_events(n_items // 4, start=90_000)
    store_path = work / "catalog.sqlite"
    store = CatalogStore(store_path)
    consumer = IngestConsumer(Applier(store, None, PoisoningPolicy(action="off")), settings, group=topic,
                              max_batch=20)
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            consumer.run()
        except BaseException as exc:  # noqa: BLE001 - counted as a failure of the scenario
            crashed.append(exc)

    thread = threading.Thread(target=run, name=f"ingest-{name}", daemon=True)
    thread.start()
    distinct = len({(e.item_id, e.version) for e in before})
    with EventProducer(settings) as producer:
        half = len(before) // 2
        producer.publish(before[:half])
        for key, value in bad:
            producer.send_raw(key, value).get(timeout=30)
        producer.publish(before[half:])
        _wait(lambda: store_seq(store_path) >= len(expected_state(before)) and
              consumer.totals.dead_lettered >= len(bad) or bool(crashed), 90)
        seq, t0 = store_seq(store_path), time.monotonic()
        producer.publish(after)
        moved = _wait(lambda: store_seq(store_path) > seq or bool(crashed), 60, poll_s=0.01)
        recovery = time.monotonic() - t0 if moved and not crashed else None
        distinct += len({(e.item_id, e.version) for e in after})
        _wait(lambda: consumer.totals.applied + consumer.totals.stale >= distinct or bool(crashed), 60)
    consumer.stop()
    thread.join(timeout=60)
    store.close()
    dlq = [dict(r.headers) for r in read_topic(bootstrap, topic + ".dlq")]  # the consumer has stopped
    audit = audit_ingest(store_path, None, [*before, *after])
    failures = len(crashed) + abs(len(dlq) - len(bad)) + int(recovery is None)
    return ScenarioResult(
        name, "events", len(before) + len(after) + len(bad), failures=failures, lost=audit["lost"],
        duplicated=audit["duplicated"], recovery_s=None if recovery is None else round(recovery, 3),
        details={"bad_records": len(bad), "dead_lettered": len(dlq),
                 "reasons": sorted({h.get("tandem-dlq-reason", b"").decode() for h in dlq}),
                 "truncated": sum(DLQ_TRUNCATED in h for h in dlq),
                 "consumer_error": str(crashed[0])[:200] if crashed else ""},
    )  # fmt: skip


def poison_version(work: Path, bootstrap: str, n_items: int = 100) -> ScenarioResult:
    """Versions 2**63 and 2**64 (top level and in the item) among good events."""
    bad = [(b"p1", json.dumps({"op": "upsert", "item": {"item_id": "p1", "title": "x"}, "version": 2**63}).encode()),
           (b"p2", json.dumps({"op": "upsert", "item": {"item_id": "p2", "title": "x", "version": 2**64}}).encode()),
           (b"p3", json.dumps({"op": "delete", "item": {"item_id": "p3"}, "version": 2**70}).encode())]
    return _ingest_scenario("poison_version", work, bootstrap, bad, n_items=n_items)


def oversized_dead_letter(work: Path, bootstrap: str, n_items: int = 100) -> ScenarioResult:
    """A 50 kB malformed record, dead-lettered to a topic that accepts 4 kB records."""
    bad = [(b"big", b"{" + b"x" * 50_000)]
    return _ingest_scenario("oversized_dead_letter", work, bootstrap, bad, {"max.message.bytes": "4096"},
                            n_items=n_items)


# --------------------------------------------------------------------------- gateway


def _load(seconds: float, workers: list[Callable[[], str]]) -> list[list[tuple[str, float]]]:
    """Run each worker in a loop for ``seconds``; ``(outcome, latency)`` per call per worker."""
    stop = time.monotonic() + seconds
    out: list[list[tuple[str, float]]] = [[] for _ in workers]

    def loop(i: int) -> None:
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            out[i].append((workers[i](), time.perf_counter() - t0))

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _call(stub: Any, request: Any) -> str:
    import grpc

    try:
        response = stub.Search(request, timeout=10)
    except grpc.RpcError as exc:
        return exc.code().name
    return "DEGRADED" if response.degraded else "OK"


def _p(values: Sequence[float], q: float) -> float | None:
    return round(sorted(values)[min(len(values) - 1, int(q * len(values)))] * 1000, 2) if values else None


def _gateway(searcher: Any) -> Any:
    from tandem_services.app import gateway_server
    from tandem_services.runner import BackgroundServer
    from tandem_services.server import ServerOptions

    return BackgroundServer(lambda: gateway_server(searcher, ServerOptions(drain_s=0, grace_s=0.5), workers=4))


def filter_flood(seconds: float = 4.0) -> ScenarioResult:
    """Flood requests (55,000 filters, ~1 MiB) from one client beside two normal clients."""
    import grpc

    from tandem.search.catalog import InMemoryCatalog
    from tandem.search.orchestrator import HybridSearcher
    from tandem_testing.term_overlap import TermOverlapRetriever
    from tandem_testing.tiny_catalog import tiny_catalog
    from tandem.v1 import search_pb2, search_pb2_grpc

    items = tiny_catalog()
    searcher = HybridSearcher([TermOverlapRetriever(items, name="bm25")], catalog=InMemoryCatalog(items))
    flood = search_pb2.SearchRequest(query="drill", filters=[search_pb2.Filter(field="brand", equals="Volta")]
                                     * FLOOD_FILTERS)
    normal = search_pb2.SearchRequest(query="cordless drill", top_k=5)
    with _gateway(searcher) as srv, grpc.insecure_channel(srv.address) as ch:
        stub = search_pb2_grpc.SearchServiceStub(ch)
        floods, *normals = _load(seconds, [lambda: _call(stub, flood), lambda: _call(stub, normal),
                                           lambda: _call(stub, normal)])
    ok = [lat for w in normals for o, lat in w if o == "OK"]
    n_normal = sum(len(w) for w in normals)
    return ScenarioResult(
        "filter_flood", "requests", len(floods) + n_normal,
        failures=(n_normal - len(ok)) + sum(o != "INVALID_ARGUMENT" for o, _ in floods), lost=0, duplicated=0,
        recovery_s=None,
        details={"flood_requests": len(floods), "flood_bytes": flood.ByteSize(),
                 "flood_refusal_p50_ms": _p([lat for _, lat in floods], 0.5),
                 "normal_p50_ms": _p(ok, 0.5), "normal_p99_ms": _p(ok, 0.99)},
    )  # fmt: skip


def topk_inflation(seconds: float = 4.0) -> ScenarioResult:
    """``top_k=1000`` searches beside ``top_k=10`` ones; the generative source is a micro-batched
    retriever service whose every batch depth is recorded."""
    import grpc

    from tandem.search.orchestrator import HybridSearcher
    from tandem_testing.term_overlap import TermOverlapRetriever
    from tandem_testing.tiny_catalog import tiny_catalog
    from tandem.v1 import search_pb2, search_pb2_grpc
    from tandem_services.app import BatchOptions, retriever_server
    from tandem_services.client import RemoteRetriever
    from tandem_services.runner import BackgroundServer
    from tandem_services.server import ServerOptions

    items = tiny_catalog()
    depths: list[int] = []

    class Beam(TermOverlapRetriever):
        def retrieve(self, queries: Sequence[str], k: int) -> list[list[Any]]:
            depths.append(k)
            return super().retrieve(queries, k)

    gen = Beam(items, name="generative", delay_s=0.005)
    opts = ServerOptions(drain_s=0, grace_s=0.5)
    with BackgroundServer(lambda: retriever_server([gen], opts, batch=BatchOptions(max_wait_ms=5))) as gsrv:
        remote = RemoteRetriever(gsrv.address, "generative", timeout_s=5)
        searcher = HybridSearcher([TermOverlapRetriever(items, name="bm25"), remote])
        cap = searcher.config.source_depth.get("generative", 10**9)
        with _gateway(searcher) as srv, grpc.insecure_channel(srv.address) as ch:
            stub = search_pb2_grpc.SearchServiceStub(ch)
            deep = search_pb2.SearchRequest(query="drill", top_k=1000)
            shallow = [search_pb2.SearchRequest(query=q, top_k=10) for q in ("saw", "paint", "hose")]
            deeps, *normals = _load(seconds, [lambda: _call(stub, deep)] +
                                    [lambda r=r: _call(stub, r) for r in shallow])  # type: ignore[misc]
        remote.close()
    calls = [o for w in (deeps, *normals) for o, _ in w]
    ok = [lat for w in normals for o, lat in w if o == "OK"]
    return ScenarioResult(
        "topk_inflation", "requests", len(calls), failures=sum(o != "OK" for o in calls) + sum(d > cap for d in depths),
        lost=0, duplicated=0, recovery_s=None,
        details={"deep_requests": len(deeps), "generative_batches": len(depths), "max_generative_depth": max(depths),
                 "depth_cap": cap, "normal_p50_ms": _p(ok, 0.5), "normal_p99_ms": _p(ok, 0.99)},
    )  # fmt: skip


def intent_down(seconds: float = 3.0) -> ScenarioResult:
    """The gateway's intent service is unreachable (nothing listens on its port)."""
    import socket

    import grpc

    from tandem.search.orchestrator import HybridSearcher
    from tandem_testing.term_overlap import TermOverlapRetriever
    from tandem_testing.tiny_catalog import tiny_catalog
    from tandem.v1 import search_pb2, search_pb2_grpc
    from tandem_services.client import RemoteIntents

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    intents = RemoteIntents(dead, timeout_s=0.2)
    searcher = HybridSearcher([TermOverlapRetriever(tiny_catalog(), name="bm25")], intents=intents)
    with _gateway(searcher) as srv, grpc.insecure_channel(srv.address) as ch:
        stub = search_pb2_grpc.SearchServiceStub(ch)
        (calls,) = _load(seconds, [lambda: _call(stub, search_pb2.SearchRequest(query="cordless drill", top_k=5))])
    lat = [x for _, x in calls]
    return ScenarioResult(
        "intent_down", "requests", len(calls), failures=sum(o not in ("OK", "DEGRADED") for o, _ in calls),
        lost=0, duplicated=0, recovery_s=None,
        details={"degraded": sum(o == "DEGRADED" for o, _ in calls), "p50_ms": _p(lat, 0.5), "p99_ms": _p(lat, 0.99)},
    )  # fmt: skip
