"""The ingest consumer against a real Kafka broker and a real Lucene index.

Publish a catalog minus its fresh items, then the fresh items plus updates, deletes,
replays, stale versions and malformed events; SIGKILL the consumer (a subprocess running
``tandem stream consume``) mid-stream, restart it, stop it with SIGTERM: the catalog store
and the Lucene index must equal the expected final state exactly, the DLQ must hold each
malformed event once with its reason and source position, and the group's committed
offsets must reach the end of every partition.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tandem.catalog.events import ItemEvent
from tandem.catalog.item import Item
from tandem.catalog.datasets import is_fresh
from tandem_testing.stream_catalog import synthetic_items
from tandem_testing.ingest_faults import store_seq
from tandem_testing.topic_reader import read_topic

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
N_ITEMS = 240
PARTITIONS = 3

MALFORMED: list[tuple[bytes | None, bytes, str]] = [
    (b"bad-1", b"{not json", "malformed_json"),
    (b"bad-2", json.dumps({"op": "rename", "item": {"item_id": "bad-2", "title": "x"}, "version": 1}).encode(),
     "unknown_op"),
    (b"bad-3", json.dumps({"op": "upsert", "version": 1}).encode(), "missing_item"),
    (b"other", json.dumps({"op": "upsert", "item": {"item_id": "bad-4", "title": "x"}, "version": 1}).encode(),
     "key_mismatch"),
    (b"bad-5", json.dumps({"op": "upsert", "item": {"item_id": "bad-5", "title": "x", "price": -2}, "version": 1}).encode(),
     "invalid_item"),
]  # fmt: skip


def _consumer(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tandem_app.cli", "stream", "consume", *args],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


def _check_health_and_metrics(health_port: int, metrics_port: int) -> None:
    import urllib.request

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{health_port}") as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    applied = [ln for ln in text.splitlines() if ln.startswith('tandem_ingest_events_total{outcome="applied"}')]
    assert applied and float(applied[0].split()[-1]) > 0


def test_kill_mid_stream_and_restart_converges_exactly(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], tmp_path: Path
) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    from tandem.streams.config import StreamSettings
    from tandem.streams.producer import EventProducer

    topic, dlq = kafka_topic(partitions=PARTITIONS), kafka_topic()
    group = f"ingest-{topic}"
    items = synthetic_items(N_ITEMS)
    fresh = [i for i in items if is_fresh(i.item_id)]
    base = [i for i in items if not is_fresh(i.item_id)]
    assert 3 <= len(fresh) < N_ITEMS // 5

    # Expected final state, built alongside the events: item_id -> (version, deleted, title).
    expected: dict[str, tuple[int, bool, str]] = {i.item_id: (1, False, i.title) for i in items}
    phase1 = [ItemEvent.upsert(i, 1) for i in base]
    phase2: list[ItemEvent] = [ItemEvent.upsert(i, 1) for i in fresh]
    for i in base[:30]:  # updates
        new = i.model_copy(update={"title": i.title + " Gen2"})
        phase2.append(ItemEvent.upsert(new, 2))
        expected[i.item_id] = (2, False, new.title)
    for i in base[30:45]:  # deletes
        phase2.append(ItemEvent.delete(i.item_id, 2))
        expected[i.item_id] = (2, True, "")
    for i in base[45:50]:  # deleted, then re-created at a higher version
        phase2 += [ItemEvent.delete(i.item_id, 2), ItemEvent.upsert(i.model_copy(update={"title": "Reborn"}), 3)]
        expected[i.item_id] = (3, False, "Reborn")
    phase2 += phase1[:10]  # replays of already-applied events
    phase2 += [ItemEvent.upsert(i.model_copy(update={"title": "stale"}), 1) for i in base[:5]]  # older versions
    phase2 += [ItemEvent.delete(i.item_id, 1) for i in base[5:8]]  # stale deletes: (id, 1) was an upsert

    settings = StreamSettings(kafka_bootstrap=kafka_bootstrap, items_topic=topic, dlq_topic=dlq)
    with EventProducer(settings) as producer:
        producer.publish(phase1)
        producer.publish(phase2[: len(phase2) // 2])
        for key, value, _ in MALFORMED:
            producer.send_raw(key, value)
        producer.publish(phase2[len(phase2) // 2 :])
    total_valid = len(phase1) + len(phase2)

    store, index, log = tmp_path / "catalog.sqlite", tmp_path / "bm25", tmp_path / "consumer.log"
    args = ["--bootstrap", kafka_bootstrap, "--topic", topic, "--dlq-topic", dlq, "--group", group,
            "--store", str(store), "--index", str(index), "--max-batch", "8"]  # fmt: skip

    # Run 1: killed without warning once some batches are applied.
    proc = _consumer(args, log)
    deadline = time.monotonic() + 120
    while store_seq(store) < 40:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "consumer applied nothing in 120 s:\n" + log.read_text()[-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    seq_at_kill = store_seq(store)
    assert seq_at_kill < len({(e.item_id, e.version) for e in phase1 + phase2}), "killed too late to test anything"

    # Run 2: resumes from the committed offsets, serves health and metrics as the chart
    # probes them, then stops gracefully on SIGTERM.
    from tandem_testing.infra import free_port

    health_port, metrics_port = free_port(), free_port()
    proc = _consumer([*args, "--health-port", str(health_port), "--metrics-port", str(metrics_port)], log)
    end_offsets: dict[TopicPartition, int] = {}
    probe = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        end_offsets = probe.end_offsets(tps)
    finally:
        probe.close()
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            committed = admin.list_group_offsets(group).get(group, {})
            if all(committed.get(tp) is not None and committed[tp].offset == end for tp, end in end_offsets.items()):
                break
            assert time.monotonic() < deadline, "consumer did not catch up:\n" + log.read_text()[-3000:]
            time.sleep(0.2)
        _check_health_and_metrics(health_port, metrics_port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        admin.close()

    # The store equals the expected final state exactly.
    from tandem.streams.store import CatalogStore

    with CatalogStore(store) as cs:
        versions = cs.versions()
        assert versions == {k: (v, d) for k, (v, d, _) in expected.items()}
        live = {i.item_id: i for i in cs.items()}
        assert {k: i.title for k, i in live.items()} == {k: t for k, (_, d, t) in expected.items() if not d}
        counts = cs.counts()
        assert counts["index_seq"] == counts["seq"]
        # Every distinct valid (item_id, version) logged once: nothing doubled.
        assert counts["applied_log"] == len({(e.item_id, e.version) for e in phase1 + phase2})
    assert total_valid > counts["applied_log"]  # the replays and stale events were really published

    # The Lucene index equals the store: same ids, same versions and titles, no duplicates.
    from tandem.jvm import ensure_jvm

    ensure_jvm()
    from tandem.sparse import SparseRetriever

    with SparseRetriever(index, writable=False) as bm25:
        stats = bm25.stats()
        assert stats.documents == len(live)
        docs = bm25.documents(list(expected))
        assert set(docs) == set(live)
        assert {k: (int(d["version"]), d["title"]) for k, d in docs.items()} == {
            k: (i.version, i.title) for k, i in live.items()
        }
        probe_item: Item = fresh[0]
        hits = bm25.retrieve([probe_item.attributes["model"]], 3)[0]
        assert hits and hits[0].item_id == probe_item.item_id

    # The DLQ holds every malformed event with its reason and source position. It is
    # at-least-once (a crash after dead-lettering replays the batch), so copies are told
    # apart by their source position, which is what a DLQ reader deduplicates on.
    dead = read_topic(kafka_bootstrap, dlq)  # the consumer has stopped: the DLQ is complete
    by_source: dict[tuple[int, int], tuple[bytes | None, str, bytes]] = {}
    for r in dead:
        h = {k: v.decode() for k, v in r.headers}
        assert h["tandem-source-topic"] == topic and h["tandem-dlq-error"]
        by_source[(int(h["tandem-source-partition"]), int(h["tandem-source-offset"]))] = (
            r.key, h["tandem-dlq-reason"], r.value,
        )  # fmt: skip
    assert sorted(by_source.values(), key=repr) == sorted(((k, r, v) for k, v, r in MALFORMED), key=repr)


def test_rebalance_between_two_consumers_loses_and_doubles_nothing(
    kafka_bootstrap: str, kafka_topic: Callable[..., str], tmp_path: Path
) -> None:
    """A second group member joins mid-stream (store-only, shared SQLite store): partitions
    move, offsets are committed on revocation, and the store still ends exact."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    from tandem.streams.config import StreamSettings
    from tandem.streams.producer import EventProducer
    from tandem.streams.store import CatalogStore

    topic, dlq = kafka_topic(partitions=PARTITIONS), kafka_topic()
    group = f"ingest-{topic}"
    items = synthetic_items(900, start=20_000)
    events = [ItemEvent.upsert(i, 1) for i in items] + [ItemEvent.upsert(i, 2) for i in items[::3]]
    # Half the stream before the second member joins, half after it has been assigned
    # partitions: the rebalance happens mid-stream however fast the first member is.
    first, second = events[: len(events) // 2], events[len(events) // 2 :]
    settings = StreamSettings(kafka_bootstrap=kafka_bootstrap, items_topic=topic)
    with EventProducer(settings) as producer:
        producer.publish(first)
    store, log_a, log_b = tmp_path / "catalog.sqlite", tmp_path / "a.log", tmp_path / "b.log"
    args = ["--bootstrap", kafka_bootstrap, "--topic", topic, "--dlq-topic", dlq, "--group", group,
            "--store", str(store), "--no-index", "--max-batch", "5"]  # fmt: skip
    a = _consumer(args, log_a)
    b = None
    try:
        deadline = time.monotonic() + 60
        while store_seq(store) < 50:
            assert a.poll() is None and time.monotonic() < deadline, log_a.read_text()[-3000:]
            time.sleep(0.05)
        b = _consumer(args, log_b)
        deadline = time.monotonic() + 120
        while "assigned partitions" not in log_b.read_text():
            assert b.poll() is None and time.monotonic() < deadline, log_b.read_text()[-3000:]
            time.sleep(0.1)
        with EventProducer(settings) as producer:
            producer.publish(second)
        probe = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
        try:
            end = probe.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
        finally:
            probe.close()
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            deadline = time.monotonic() + 120
            while True:
                committed = admin.list_group_offsets(group).get(group, {})
                if all(committed.get(tp) is not None and committed[tp].offset == off for tp, off in end.items()):
                    break
                assert a.poll() is None and b.poll() is None, log_a.read_text()[-2000:] + log_b.read_text()[-2000:]
                assert time.monotonic() < deadline, "group did not catch up"
                time.sleep(0.2)
        finally:
            admin.close()
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc in (a, b) if proc is not None]
    assert codes == [0, 0], log_a.read_text()[-2000:] + log_b.read_text()[-2000:]
    # The group really rebalanced: b took partitions, a was assigned twice (before and after).
    assert "assigned partitions" in log_b.read_text()
    assert log_a.read_text().count("assigned partitions") >= 2
    with CatalogStore(store) as cs:
        expected = {i.item_id: 1 for i in items} | {i.item_id: 2 for i in items[::3]}
        assert {k: v for k, (v, _) in cs.versions().items()} == expected
        assert cs.counts()["applied_log"] == len(events)


def test_a_replaced_client_resumes_where_the_stuck_one_stood(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The lag watch's last remedy (tandem.streams.lag): a consumer told its client is stuck
    replaces it mid-stream; the new group member reads on from the committed offsets, so every
    event is applied once, none twice."""
    from kafka import KafkaAdminClient

    from tandem.streams import lag
    from tandem.streams.apply import Applier
    from tandem.streams.config import StreamSettings
    from tandem.streams.consumer import IngestConsumer
    from tandem.streams.producer import EventProducer
    from tandem.streams.store import CatalogStore

    topic = f"rebuild-{time.time_ns()}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    settings = StreamSettings(kafka_bootstrap=kafka_bootstrap, items_topic=topic, dlq_topic=f"{topic}.dlq")
    items = synthetic_items(60, start=70_000)
    with EventProducer(settings) as producer:
        producer.publish([ItemEvent.upsert(i, 1) for i in items[:30]])
    rebuilds = lag.REBUILDS._value.get()
    with CatalogStore(tmp_path / "c.sqlite") as store:
        consumer = IngestConsumer(Applier(store, None), settings, group=f"g-{topic}", max_batch=10)
        first = consumer._kafka

        def after_batch(report: object) -> None:
            if consumer._kafka is first and consumer.totals.applied >= 10:
                consumer.lag_watch._reseeks = {"stuck": consumer.lag_watch.rebuild_after}  # as after two re-seeks
                with EventProducer(settings) as producer:
                    producer.publish([ItemEvent.upsert(i, 1) for i in items[30:]])

        totals = consumer.run(max_idle_s=3.0, on_batch=after_batch)
        assert consumer._kafka is not first and lag.REBUILDS._value.get() == rebuilds + 1
        assert all(store.get(i.item_id) for i in items)
    assert (totals.applied, totals.duplicates) == (60, 0)
