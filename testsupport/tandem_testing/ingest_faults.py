"""Ingest fault scenarios: the Kafka broker restarted during ingest, the consumer SIGKILLed
mid-batch. See :mod:`tandem_testing.faults` for the result type and the column definitions.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tandem.catalog.events import ItemEvent
from tandem.streams.apply import Applier, BatchReport
from tandem_testing.fault_harness import ScenarioResult

if TYPE_CHECKING:
    from tandem_testing.kafka_broker import KafkaBroker

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]


def synthetic_events(n_items: int, *, start: int = 0) -> list[ItemEvent]:
    """Upserts of ``n_items`` synthetic items, then an update of every fourth and a delete of every tenth.

    Returns events in publish order; several versions per item exercise ordering and
    idempotence, not just inserts.
    """
    from tandem_testing.stream_catalog import synthetic_items

    items = synthetic_items(n_items, start=start)
    events = [ItemEvent.upsert(i, 1) for i in items]
    events += [ItemEvent.upsert(i.model_copy(update={"title": i.title + " Mk2"}), 2) for i in items[::4]]
    events += [ItemEvent.delete(i.item_id, 3) for i in items[::10]]
    return events


def expected_state(events: Sequence[ItemEvent]) -> dict[str, tuple[int, bool]]:
    """``item_id → (version, deleted)`` after applying ``events``."""
    out: dict[str, tuple[int, bool]] = {}
    for e in events:
        if e.item_id not in out or out[e.item_id][0] < e.version:
            out[e.item_id] = (e.version, e.op == "delete")
    return out


def audit_ingest(store_path: Path, index_dir: Path | None, events: Sequence[ItemEvent]) -> dict[str, int]:
    """Compare the store (and the Lucene index) with what ``events`` should have produced.

    Returns ``lost`` (item states missing or wrong in the store, or live items missing or at
    the wrong version in the index) and ``duplicated`` (index documents beyond the live
    items, applied-log rows beyond the distinct events).
    """
    from tandem.streams.store import CatalogStore

    expected = expected_state(events)
    with CatalogStore(store_path) as store:
        versions = store.versions()
        applied_log = store.counts()["applied_log"]
    lost = sum(versions.get(k) != v for k, v in expected.items())
    duplicated = max(0, applied_log - len({(e.item_id, e.version) for e in events}))
    live = {k: v for k, (v, d) in expected.items() if not d}
    if index_dir is not None:
        from tandem.jvm import ensure_jvm

        ensure_jvm()
        from tandem.sparse import SparseRetriever

        with SparseRetriever(index_dir, writable=False) as bm25:
            docs = bm25.documents(list(expected))
            n_docs = bm25.stats().documents
        lost += sum(k not in docs or int(docs[k]["version"]) != v for k, v in live.items())
        duplicated += max(0, n_docs - len(live))
    return {"lost": lost, "duplicated": duplicated, "live": len(live)}


def store_seq(path: Path) -> int:
    """The catalog store's change sequence, read from outside the process that writes it (0 before
    the store exists): how a test watches a consumer's progress without opening the store."""
    import sqlite3

    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='seq'").fetchone()
        return int(row[0]) if row else 0
    except sqlite3.OperationalError:  # schema not created yet
        return 0
    finally:
        db.close()


def _wait(check: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


class HoldBatchMixin:
    """Put before an applier class (``class X(HoldBatchMixin, SomeApplier)``): once
    :attr:`armed`, the next batch is held after it was applied (before the consumer commits)
    until :attr:`release` — so a fault can be injected exactly between "applied" and "committed"."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.armed, self.holding, self.release = threading.Event(), threading.Event(), threading.Event()

    def apply(self, events: Sequence[Any]) -> BatchReport:
        """Apply, then (when armed, once) wait for :attr:`release` before returning."""
        report = super().apply(events)  # type: ignore[misc]  # the applier class after the mixin
        if self.armed.is_set() and not self.release.is_set():
            self.armed.clear()
            self.holding.set()
            self.release.wait(60)
        return report


def restartable_broker(work: Path, broker: KafkaBroker | None = None) -> AbstractContextManager[KafkaBroker]:
    """The broker a broker-restart scenario restarts: ``broker`` when the caller lends one (tests
    share one between the scenarios: it is restarted, so never the suite's shared broker), else
    a private :class:`~tandem_testing.infra.KafkaBroker` in ``work/kafka``, closed afterwards."""
    if broker is not None:
        return nullcontext(broker)
    from tandem_testing.infra import KafkaBroker

    return KafkaBroker(data_dir=work / "kafka")


def restart_at_held_batch(broker: Any, applier: HoldBatchMixin) -> tuple[bool, float, float]:
    """Stop ``broker`` while ``applier`` holds an applied, uncommitted batch, release it (its
    commit meets the outage), start the broker again; ``(held, went down, came back)``.
    Call from the thread that started the broker: it dies with that thread."""
    applier.armed.set()
    held = applier.holding.wait(60)
    t_down = time.monotonic()
    broker.stop()
    applier.release.set()
    broker.start()
    return held, t_down, time.monotonic()


class HoldOneBatch(HoldBatchMixin, Applier):
    """The item :class:`~tandem.streams.apply.Applier` with :class:`HoldBatchMixin`."""


def kafka_broker_restart(work: Path, n_items: int = 200, publish_s: float = 4.0,
                         broker: KafkaBroker | None = None) -> ScenarioResult:
    """Kafka restarted (stop + start, same ports and data) while events are published and consumed.

    A publisher thread sends the events in small acknowledged batches over ``publish_s``
    seconds, retrying a batch the broker did not acknowledge; the ingest consumer (store +
    Lucene index) runs in a thread. The broker goes down while the consumer holds a batch
    that is applied but not yet committed (:class:`HoldOneBatch`), the worst moment: its
    offset commit meets the outage. recovery = broker answering again → first event applied
    after it. ``broker``: a broker to restart instead of a private one (:func:`restartable_broker`).
    """
    from tandem.jvm import ensure_jvm
    from tandem.streams.apply import LazyBM25Index
    from tandem.streams.config import StreamSettings
    from tandem.streams.consumer import IngestConsumer
    from tandem.streams.producer import EventProducer
    from tandem.streams.store import CatalogStore
    ensure_jvm()
    events = synthetic_events(n_items)
    store_path, index_dir = work / "catalog.sqlite", work / "bm25"
    with restartable_broker(work, broker) as broker:
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics({"items": {"num_partitions": 3, "replication_factor": 1}}, wait_for_metadata=True)
        admin.close()
        settings = StreamSettings(kafka_bootstrap=broker.bootstrap, items_topic="items", dlq_topic="items.dlq")
        store = CatalogStore(store_path)
        index = LazyBM25Index(index_dir)
        applier = HoldOneBatch(store, index)
        consumer = IngestConsumer(applier, settings, group="faults", max_batch=50,
                                  reconnect_backoff_max_ms=500)
        consumer_thread = threading.Thread(target=consumer.run, name="ingest", daemon=True)
        consumer_thread.start()
        published = {"events": 0, "retries": 0, "failed": 0}
        sent_at: list[tuple[float, int]] = []  # (when a batch was handed to the producer, its size)
        stop_publishing = threading.Event()

        def publisher() -> None:
            batch = 10
            pause = publish_s / max(1, len(events) / batch)
            with EventProducer(settings, request_timeout_ms=5000, max_block_ms=5000,
                               reconnect_backoff_max_ms=500) as producer:
                for i in range(0, len(events), batch):
                    if stop_publishing.is_set():
                        published["failed"] += len(events) - i
                        return
                    chunk = events[i:i + batch]
                    give_up = time.monotonic() + 90
                    sent_at.append((time.monotonic(), len(chunk)))
                    while True:
                        try:
                            producer.publish(chunk)
                            published["events"] += len(chunk)
                            break
                        except Exception as e:  # noqa: BLE001 - any send error is retried, then counted
                            published["retries"] += 1
                            if time.monotonic() > give_up:
                                log.error("giving up on %d events: %s", len(chunk), e)
                                published["failed"] += len(chunk)
                                break
                            time.sleep(0.2)
                    time.sleep(pause)

        pub = threading.Thread(target=publisher, name="publisher", daemon=True)
        pub.start()
        distinct = len({(e.item_id, e.version) for e in events})
        try:
            _wait(lambda: published["events"] >= len(events) * 0.35, 60)
            held, t_down, back = restart_at_held_batch(broker, applier)
            seq_back = store_seq(store_path)
            resumed = _wait(lambda: store_seq(store_path) > seq_back, 60, poll_s=0.01)
            recovery = time.monotonic() - back if resumed else None
            pub.join(timeout=180)
            with CatalogStore(store_path) as view:  # a connection of this thread; the consumer owns `store`
                _wait(lambda: view.counts()["applied_log"] >= distinct and view.index_seq == view.seq, 90)
        finally:
            stop_publishing.set()
            pub.join(timeout=30)
            consumer.stop()
            consumer_thread.join(timeout=60)
            index.close()
            store.close()
        audit = audit_ingest(store_path, index_dir, events)
    return ScenarioResult(
        "kafka_broker_restart", "events", len(events), failures=published["failed"] + consumer.totals.dead_lettered,
        lost=audit["lost"], duplicated=audit["duplicated"],
        recovery_s=None if recovery is None else round(recovery, 3),
        details={"items": len(expected_state(events)), "commit_met_outage": held, "outage_s": round(back - t_down, 3), "publish_retries": published["retries"],
                 "published_during_outage": sum(n for t, n in sent_at if t_down <= t <= back),
                 "replayed_duplicates": consumer.totals.duplicates},
    )  # fmt: skip


def _consume_cli(args: list[str], log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tandem_app.cli", "stream", "consume", *args], cwd=_REPO,
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def consumer_sigkill(work: Path, bootstrap: str, n_items: int = 200, kill_at: float = 0.35) -> ScenarioResult:
    """The ingest consumer (``tandem stream consume``, store + Lucene) SIGKILLed mid-stream, restarted.

    All events are published first; the consumer applies them in batches of 8 and is killed
    once ``kill_at`` of them are in the store, so the kill lands inside a batch's
    store→index→commit sequence. A second run resumes from the committed offsets and is
    stopped with SIGTERM once the group's offsets reach the end. recovery = restart → first
    newly applied event (includes process and JVM start).
    """
    import uuid

    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    from tandem.streams.config import StreamSettings
    from tandem.streams.producer import EventProducer

    work.mkdir(parents=True, exist_ok=True)
    topic, group = f"faults.items.{uuid.uuid4().hex[:8]}", f"faults-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": 3, "replication_factor": 1},
                         topic + ".dlq": {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)
    events = synthetic_events(n_items, start=50_000)
    distinct = len({(e.item_id, e.version) for e in events})
    store_path, index_dir, log_file = work / "catalog.sqlite", work / "bm25", work / "consumer.log"
    try:
        with EventProducer(StreamSettings(kafka_bootstrap=bootstrap, items_topic=topic)) as producer:
            producer.publish(events)
        args = ["--bootstrap", bootstrap, "--topic", topic, "--dlq-topic", topic + ".dlq", "--group", group,
                "--store", str(store_path), "--index", str(index_dir), "--max-batch", "8"]  # fmt: skip
        proc = _consume_cli(args, log_file)
        killed_at = 0
        try:
            if not _wait(lambda: store_seq(store_path) >= distinct * kill_at or proc.poll() is not None, 120):
                raise TimeoutError("consumer applied too little in 120 s:\n" + log_file.read_text()[-2000:])
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            killed_at = store_seq(store_path)
            restarted = time.monotonic()
            proc = _consume_cli(args, log_file)
            resumed = _wait(lambda: store_seq(store_path) > killed_at, 120, poll_s=0.02)
            recovery = time.monotonic() - restarted if resumed else None
            probe = KafkaConsumer(bootstrap_servers=bootstrap)
            end = probe.end_offsets([TopicPartition(topic, p) for p in range(3)])
            probe.close()

            def caught_up() -> bool:
                committed = admin.list_group_offsets(group).get(group, {})
                return all(committed.get(tp) is not None and committed[tp].offset == off for tp, off in end.items())

            _wait(caught_up, 120, poll_s=0.2)
            proc.send_signal(signal.SIGTERM)
            exit_code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        audit = audit_ingest(store_path, index_dir, events)
    finally:
        admin.delete_topics([topic, topic + ".dlq"])
        admin.close()
    return ScenarioResult(
        "consumer_sigkill", "events", len(events), failures=int(exit_code != 0), lost=audit["lost"],
        duplicated=audit["duplicated"], recovery_s=None if recovery is None else round(recovery, 3),
        details={"items": len(expected_state(events)), "applied_before_kill": killed_at, "distinct_events": distinct},
    )  # fmt: skip
