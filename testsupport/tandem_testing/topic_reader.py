"""Read a whole Kafka topic, as it stands now, without waiting for silence.

Tests that check a dead-letter topic after the writers stopped used to iterate a
``KafkaConsumer(consumer_timeout_ms=5000)``: it ends only after 5 s without a record, so every
such read cost a fixed 5 s. :func:`read_topic` takes the end offsets first and stops as soon
as every partition is read up to them: the same records (everything written before the call),
without the idle wait.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kafka.consumer.fetcher import ConsumerRecord


def read_topic(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[ConsumerRecord]:
    """The records of ``topic``, read at least up to its end offsets at the time of the call
    (each partition in offset order); ``[]`` when the topic does not exist.

    Raises :class:`AssertionError` when the records up to the end offsets do not all arrive
    within ``timeout_s``.
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"{topic}: read {len(records)} records, not up to {end}"
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()
