"""``IngestConsumer.run(max_idle_s=...)``: the idle clock starts once partitions are assigned."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from kafka import TopicPartition

from tandem.streams import consumer as consumer_mod
from tandem.streams.consumer import IngestConsumer, IngestTotals
from tandem.streams.lag import LagWatch


class SlowJoinKafka:
    """A Kafka consumer whose group gives it a partition only after ``join_s`` and never has records."""

    def __init__(self, join_s: float | None) -> None:
        self.join_at = None if join_s is None else time.monotonic() + join_s
        self.closed = False

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        pass

    def assignment(self) -> set[Any]:
        joined = self.join_at is not None and time.monotonic() >= self.join_at
        return {TopicPartition("items", 0)} if joined else set()

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        time.sleep(timeout_ms / 1000)
        return {}

    def close(self, autocommit: bool = False) -> None:
        self.closed = True


def _consumer(kafka: SlowJoinKafka) -> IngestConsumer:
    c = IngestConsumer.__new__(IngestConsumer)  # no broker: only the loop's clock is exercised
    c.topic, c.max_batch, c.poll_timeout_ms = "items", 10, 20
    c.totals, c.lag_watch, c._stop = IngestTotals(), LagWatch(every_s=3600), threading.Event()
    c._pending, c._commit_retry_at = {}, 0.0
    c._kafka = kafka
    c._dlq = type("Dlq", (), {"close": lambda self: None})()
    return c


def test_a_slow_group_join_is_not_idleness() -> None:
    kafka = SlowJoinKafka(join_s=0.8)
    t0 = time.monotonic()
    _consumer(kafka).run(max_idle_s=0.3)
    took = time.monotonic() - t0
    assert took >= 0.8 + 0.3 and kafka.closed  # the old clock, started before the join, ended at ~0.3 s


def test_a_consumer_never_assigned_stops_after_the_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_mod, "ASSIGN_WAIT_S", 0.5)
    kafka = SlowJoinKafka(join_s=None)
    t0 = time.monotonic()
    _consumer(kafka).run(max_idle_s=0.2)
    assert 0.7 <= time.monotonic() - t0 < 5 and kafka.closed
