"""Dead letters survive a broker outage: the consumer waits, resends failed ones, drops none."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from tandem.errors import Unavailable
from tandem.streams import consumer as consumer_mod
from tandem.streams.consumer import DeadLetter, IngestConsumer


class OutageProducer:
    """A DLQ producer whose broker is away for the first ``outage_flushes`` flushes.

    While away, a flush times out and every send made so far fails (its delivery timed
    out); once back, a flush acknowledges what is in flight.
    """

    def __init__(self, outage_flushes: int) -> None:
        self.outage_flushes = outage_flushes
        self.flushes = 0
        self.sends: list[bytes] = []
        self.acked: list[bytes] = []
        self._in_flight: list[tuple[bytes, Future]] = []

    def send(self, topic: str, *, key: bytes | None, value: bytes, headers: list[Any]) -> Future:
        assert topic == "tandem.items.dlq" and headers
        fut = Future()
        self.sends.append(value)
        self._in_flight.append((value, fut))
        return fut

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        in_flight, self._in_flight = self._in_flight, []
        if self.flushes <= self.outage_flushes:
            for _, fut in in_flight:
                fut.failure(KafkaTimeoutError("delivery timed out"))
            raise KafkaTimeoutError("flush timed out")
        for value, fut in in_flight:
            self.acked.append(value)
            fut.success(None)


def _consumer(producer: OutageProducer) -> IngestConsumer:
    c = IngestConsumer.__new__(IngestConsumer)  # no broker: only the DLQ path is exercised
    c._dlq = producer
    c.dlq_topic = "tandem.items.dlq"
    c._stop = threading.Event()
    return c


LETTERS = [DeadLetter(f"k{i}".encode(), f"v{i}".encode(), [("tandem-dlq-reason", b"bad_json")]) for i in range(3)]


def test_letters_are_resent_until_acknowledged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_mod, "DLQ_FLUSH_S", 0.01)
    producer = OutageProducer(outage_flushes=2)
    _consumer(producer)._deliver(LETTERS)
    assert sorted(producer.acked) == [b"v0", b"v1", b"v2"]  # each acknowledged exactly once
    assert producer.flushes == 3 and len(producer.sends) == 9  # sent anew after each failed delivery


def test_no_letters_no_flush() -> None:
    producer = OutageProducer(outage_flushes=0)
    _consumer(producer)._deliver([])
    assert producer.flushes == 0 and producer.sends == []


def test_stop_during_an_outage_raises_without_pretending_delivery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_mod, "DLQ_FLUSH_S", 0.01)
    producer = OutageProducer(outage_flushes=10**6)
    c = _consumer(producer)
    c.stop()
    with pytest.raises(Unavailable, match="3 dead letters not acknowledged"):
        c._deliver(LETTERS)
    assert producer.acked == []
