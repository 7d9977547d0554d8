"""At-least-once consumption against a real KRaft broker: commit after processing, crash, resume.

The contract the ingest consumer relies on: with manual commits made only after a batch is
processed, a consumer that dies between processing and committing loses nothing, and its
successor replays exactly the uncommitted records — no committed record comes back.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from kafka import KafkaConsumer
    from kafka.consumer.fetcher import ConsumerRecord

pytestmark = pytest.mark.integration

N_MESSAGES = 1_000
PARTITIONS = 3
BATCH = 50
COMMITTED_BEFORE_CRASH = 400  # commit at least this many before the simulated crash


def _produce(bootstrap: str, topic: str) -> tuple[list[str], Counter[int]]:
    """Send 1,000 keyed records; returns the keys and how many records each partition got."""
    from kafka import KafkaProducer
    from kafka.serializer import DefaultSerializer, JsonSerializer

    keys = [f"item-{i:04d}" for i in range(N_MESSAGES)]
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5,
        key_serializer=DefaultSerializer(), value_serializer=JsonSerializer(),
    )
    try:
        futures = [producer.send(topic, key=k, value={"item_id": k, "i": i}) for i, k in enumerate(keys)]
        producer.flush(timeout=60)
        # .get() raises if any send failed: the test must start from 1,000 acknowledged records.
        partitions = Counter(f.get(timeout=30).partition for f in futures)
    finally:
        producer.close()
    assert sorted(partitions) == list(range(PARTITIONS)), f"keys did not spread: {partitions}"
    return keys, partitions


def _consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    """A group member that commits only when told to, starting from the earliest offset."""
    from kafka import KafkaConsumer
    from kafka.serializer import DefaultSerializer, JsonSerializer

    return KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=BATCH,
        key_deserializer=DefaultSerializer(), value_deserializer=JsonSerializer(),
    )


def _poll_batch(consumer: KafkaConsumer, timeout_s: float = 30.0) -> list[ConsumerRecord]:
    """The next non-empty batch of records (group join can take a few empty polls)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=500)
        records = [r for recs in batch.values() for r in recs]
        if records:
            return records
    return []


def _process(records: list[ConsumerRecord]) -> list[str]:
    """The test's processing step: check each record survived the round trip, note its key."""
    for r in records:
        assert r.value["item_id"] == r.key, f"value does not match key at {r.partition}/{r.offset}"
    return [r.key for r in records]


def _commit_after(consumer: KafkaConsumer, records: list[ConsumerRecord]) -> None:
    """Commit exactly the processed records: next offset = last processed + 1, per partition."""
    from kafka.structs import OffsetAndMetadata, TopicPartition

    last: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        last[tp] = max(last.get(tp, -1), r.offset)
    consumer.commit({tp: OffsetAndMetadata(off + 1, "", -1) for tp, off in last.items()})


@pytest.mark.timeout(180)
def test_manual_commit_consumer_resumes_without_loss_and_replays_only_uncommitted(
    kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    topic = kafka_topic(partitions=PARTITIONS)
    keys, per_partition = _produce(kafka_bootstrap, topic)
    group = f"{topic}.group"

    # Run 1: process and commit batch by batch, then "crash" after processing one more
    # batch but before committing it.
    committed: list[str] = []
    consumer = _consumer(kafka_bootstrap, topic, group)
    try:
        while len(committed) < COMMITTED_BEFORE_CRASH:
            records = _poll_batch(consumer)
            assert records, "consumer got no records before the crash point"
            processed = _process(records)
            _commit_after(consumer, records)
            committed.extend(processed)
        uncommitted = _process(_poll_batch(consumer))
        assert uncommitted, "no batch was in flight at the crash"
    finally:
        consumer.close(autocommit=False)

    assert len(committed) == len(set(committed)), "run 1 saw a record twice"
    assert COMMITTED_BEFORE_CRASH <= len(committed) < N_MESSAGES

    # Run 2: same group, resumes from the committed offsets until every key is accounted for.
    replayed: list[str] = []
    consumer = _consumer(kafka_bootstrap, topic, group)
    try:
        while len(set(committed) | set(replayed)) < N_MESSAGES:
            records = _poll_batch(consumer)
            missing = N_MESSAGES - len(set(committed) | set(replayed))
            assert records, f"stream ended with {missing} keys missing"
            replayed.extend(_process(records))
            _commit_after(consumer, records)
        # Nothing beyond the 1,000: a further poll stays empty.
        assert _poll_batch(consumer, timeout_s=2.0) == []
    finally:
        consumer.close(autocommit=False)

    assert set(committed) | set(replayed) == set(keys), "keys were lost"
    assert not set(committed) & set(replayed), "committed records were replayed"
    assert len(replayed) == len(set(replayed)), "run 2 saw a record twice"
    assert set(uncommitted) <= set(replayed), "the batch in flight at the crash was not replayed"
    assert sorted(replayed) == sorted(set(keys) - set(committed))

    # The group's committed offsets now sit at the end of every partition.
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    assert {tp.partition: o.offset for tp, o in offsets.items()} == dict(per_partition)


@pytest.mark.timeout(300)
def test_broker_restart_and_crash_keep_address_topics_and_committed_offsets() -> None:
    """``KafkaBroker.restart()`` / ``kill()`` as fault tests use them: data and address survive."""
    from kafka import KafkaAdminClient, KafkaProducer

    from tandem_testing.infra import KafkaBroker
    from tandem_testing.kafka_broker import FAST_UNFENCE

    with KafkaBroker(broker_config=FAST_UNFENCE) as broker:
        bootstrap, data_dir = broker.bootstrap, broker.data_dir
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics({"t": {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)
        admin.close()
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        for i in range(3):
            producer.send("t", key=b"k", value=str(i).encode()).get(timeout=30)
        producer.close()
        consumer = _consumer_raw(bootstrap, "t", "g")
        first = _poll_batch(consumer)[:2]
        _commit_after(consumer, first)
        consumer.close(autocommit=False)

        broker.restart()  # graceful
        assert broker.bootstrap == bootstrap
        consumer = _consumer_raw(bootstrap, "t", "g")
        assert [r.value for r in _poll_batch(consumer)] == [b"2"], "committed offset lost on restart"
        consumer.close(autocommit=False)

        broker.kill()  # crash: no clean shutdown, the log is recovered on start
        assert not broker.running
        broker.start()
        consumer = _consumer_raw(bootstrap, "t", "g")
        assert [r.value for r in _poll_batch(consumer)] == [b"2"], "committed offset lost on crash"
        consumer.close(autocommit=False)
    assert not broker.running
    assert not data_dir.exists(), "close() left the broker's data behind"


def _consumer_raw(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    """A manual-commit group member without deserializers (values stay bytes)."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest",
    )
