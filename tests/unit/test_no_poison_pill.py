"""No poison pill: an event no store can hold is refused at validation; any per-record failure
in apply is dead-lettered with its reason while the rest of the batch (and the stream) goes on;
a dead-letter topic that cannot take a letter ends the consumer with a clear error, or gets the
letter without its value when it is only too large."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kafka.errors import MessageSizeTooLargeError, TopicAuthorizationFailedError
from kafka.future import Future

from tandem.catalog.events import EventError, EventReason, ItemEvent, decode_event, parse_line
from tandem.catalog.item import MAX_VERSION, Item
from tandem.streams import consumer as consumer_mod
from tandem.streams.apply import Applier
from tandem.streams.consumer import IngestConsumer, IngestTotals
from tandem.streams.dead_letters import DLQ_REASON, DLQ_TRUNCATED, DeadLetter, DeadLetterRefused, deliver
from tandem.streams.poisoning import PoisoningPolicy
from tandem.streams.store import APPLY_ERROR, CatalogStore


def _record(key: bytes, body: dict[str, Any]) -> tuple[bytes, bytes]:
    return key, json.dumps(body).encode()


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("where", ["top", "item"])
def test_a_version_sqlite_cannot_hold_is_refused_at_decode(where: str) -> None:
    item: dict[str, Any] = {"item_id": "t01", "title": "Drill"}
    body: dict[str, Any] = {"op": "upsert", "item": item}
    (body if where == "top" else item)["version"] = 2**63
    with pytest.raises(EventError) as err:
        decode_event(*_record(b"t01", body))
    assert err.value.reason == EventReason.BAD_VERSION and "version`" in str(err.value)
    body.pop("version", None), item.pop("version", None)
    (body if where == "top" else item)["version"] = MAX_VERSION
    assert decode_event(*_record(b"t01", body)).version == MAX_VERSION


def test_bounds_hold_on_every_way_in() -> None:
    with pytest.raises(EventError, match="bad_version|version"):
        decode_event(*_record(b"t01", {"op": "delete", "item": {"item_id": "t01"}, "version": 2**64}))
    with pytest.raises(EventError, match="version"):
        parse_line('{"item_id": "t01", "title": "x", "version": 9223372036854775808}')
    with pytest.raises(ValueError, match="version"):
        Item(item_id="a", title="x", version=2**63)
    with pytest.raises(ValueError, match="version"):
        ItemEvent.delete("a", 2**63)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"op": "upsert", "item": {"item_id": "t01", "title": "x", "price": 1e400}, "version": 1}, "price"),
        ({"op": "upsert", "item": {"item_id": "t01", "title": "x\ud800"}, "version": 1}, "title"),
        ({"op": "upsert", "item": {"item_id": "t01", "title": "x", "attributes": {"k": "\udfff"}}, "version": 1},
         "attributes"),
        ({"op": "delete", "item": {"item_id": "t\x01"}, "version": 1}, "item.item_id"),
        ({"op": "delete", "item": {"item_id": "x" * 129}, "version": 1}, "item.item_id"),
        ({"op": "delete", "item": {"item_id": "a\ud800"}, "version": 1}, "item.item_id"),
    ],
)
def test_values_no_store_or_index_can_hold_are_refused_naming_the_field(body: dict[str, Any], field: str) -> None:
    line = json.dumps(body)  # \ud800 travels as a JSON escape, as a producer could send it
    with pytest.raises(EventError) as err:
        parse_line(line)  # no record key to check: validation of the body alone
    assert err.value.reason == EventReason.INVALID_ITEM
    assert f"`{field}" in str(err.value) or f".{field}`" in str(err.value)


# --------------------------------------------------------------------------- the store


def _unchecked(item_id: str, version: int, title: str = "x") -> ItemEvent:
    """An event built without validation: what a future bug or another producer could hand apply."""
    item = Item.model_construct(item_id=item_id, title=title, description=None, brand=None, category=[],
                                attributes={}, price=None, version=version)
    return ItemEvent.model_construct(op="upsert", item_id=item_id, version=version, item=item)


def _up(item_id: str, version: int) -> ItemEvent:
    return ItemEvent.upsert(Item(item_id=item_id, title=f"{item_id} v{version}"), version)


@pytest.mark.parametrize("bad", [_unchecked("b", 2**64), _unchecked("b", 1, title="x\ud800"),
                                 _unchecked("b\ud800", 1), ItemEvent.model_construct(op="upsert", item_id="b",
                                                                                    version=1, item=None)])
def test_one_event_that_breaks_its_write_is_reported_and_the_rest_applied(tmp_path: Path, bad: ItemEvent) -> None:
    with CatalogStore(tmp_path / "c.sqlite") as store:
        result = store.apply([_up("a", 1), bad, _up("c", 1)])
        assert [c.item_id for c in result.applied] == ["a", "c"]
        assert [(f.position, f.reason) for f in result.failed] == [(1, APPLY_ERROR)]
        assert result.total == 3 and store.seq == 2 and [c.seq for c in result.applied] == [1, 2]
        assert store.get("b") is None and store.counts()["applied_log"] == 2
        # the stream goes on: later batches apply as usual
        assert len(store.apply([_up("d", 1)]).applied) == 1 and store.seq == 3


def test_a_fault_of_the_store_itself_aborts_the_whole_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with CatalogStore(tmp_path / "c.sqlite") as store:
        calls = {"n": 0}
        real = store._apply_one

        def flaky(ev: ItemEvent, *args: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 2:
                raise sqlite3.OperationalError("disk I/O error")
            return real(ev, *args)

        monkeypatch.setattr(store, "_apply_one", flaky)
        with pytest.raises(sqlite3.OperationalError):
            store.apply([_up("a", 1), _up("b", 1)])
        assert store.seq == 0 and store.get("a") is None  # rolled back: the batch is retried whole


def test_applier_reports_store_failures_at_their_batch_position(tmp_path: Path) -> None:
    with CatalogStore(tmp_path / "c.sqlite") as store:
        stuffed = Item(item_id="s", title="heater " * 12, version=1)
        events = [_up("a", 1), ItemEvent.upsert(stuffed, 1), _unchecked("b", 2**64), _up("c", 1)]
        report = Applier(store, None, PoisoningPolicy(action="dlq")).apply(events)
        assert [(pos, r.reason) for pos, r in report.refused] == [(1, "poisoning:repetition"), (2, APPLY_ERROR)]
        assert report.applied == 2 and report.events == 2
        assert "OverflowError" in report.refused[1][1].describe()


# --------------------------------------------------------------------------- the consumer


class FakeKafka:
    """The consumer side: remembers committed offsets."""

    def __init__(self) -> None:
        self.committed: dict[Any, Any] = {}

    def commit(self, offsets: dict[Any, Any]) -> None:
        self.committed.update(offsets)


class AckingProducer:
    """A dead-letter producer whose broker acknowledges everything under ``limit`` bytes of value
    and refuses larger records (as a topic with a small ``max.message.bytes`` does), or refuses
    everything with ``refuse``."""

    def __init__(self, limit: int = 10**9, refuse: Exception | None = None, sync: bool = False) -> None:
        self.limit, self.refuse, self.sync = limit, refuse, sync
        self.acked: list[DeadLetter] = []
        self.sends = 0

    def send(self, topic: str, *, key: bytes | None, value: bytes, headers: list[Any]) -> Future:
        self.sends += 1
        fut = Future()
        too_large = len(value or b"") > self.limit
        if too_large and self.sync:
            raise MessageSizeTooLargeError("The message is too large for max_request_size")
        if self.refuse is not None:
            fut.failure(self.refuse)
        elif too_large:
            fut.failure(MessageSizeTooLargeError())
        else:
            self.acked.append(DeadLetter(key, value, headers))
            fut.success(None)
        return fut

    def flush(self, timeout: float | None = None) -> None:
        pass


def _consumer(tmp_path: Path, producer: AckingProducer) -> IngestConsumer:
    c = IngestConsumer.__new__(IngestConsumer)  # no broker: the per-record path only
    c.applier = Applier(CatalogStore(tmp_path / "c.sqlite"), None, PoisoningPolicy(action="off"))
    c._kafka, c._dlq, c.dlq_topic = FakeKafka(), producer, "items.dlq"
    c._stop, c._pending, c._commit_retry_at, c.totals = threading.Event(), {}, 0.0, IngestTotals()
    return c


def _rec(offset: int, key: bytes, value: bytes) -> Any:
    return SimpleNamespace(topic="items", partition=0, offset=offset, key=key, value=value, headers=[])


def test_consumer_dead_letters_a_poison_event_and_commits_past_it(tmp_path: Path) -> None:
    real_decode = consumer_mod.decode_event

    def decode(key: bytes, value: bytes) -> ItemEvent:
        # "poison" passes decoding (as a bug in validation would let it) and breaks its write
        return _unchecked("p", 2**64) if key == b"poison" else real_decode(key, value)

    producer = AckingProducer()
    c = _consumer(tmp_path, producer)
    c._decode = decode  # the consumer's decoder (``decode=``), as the feedback replay sets its own
    good = json.dumps({"op": "upsert", "item": {"item_id": "a", "title": "Drill"}, "version": 1}).encode()
    huge = json.dumps({"op": "upsert", "item": {"item_id": "h", "title": "x"}, "version": 2**63}).encode()
    tp = ("items", 0)
    report = c._process({tp: [_rec(0, b"a", good), _rec(1, b"poison", b"{}"), _rec(2, b"h", huge)]})
    assert report.applied == 1 and c.applier.store.get("a") is not None
    assert sorted(dict(letter.headers)[DLQ_REASON] for letter in producer.acked) == [b"apply_error", b"bad_version"]
    assert c._kafka.committed[tp].offset == 3  # the stream moves past both
    assert c.totals.reasons == {"apply_error": 1, "bad_version": 1}


@pytest.mark.parametrize("sync", [False, True])
def test_a_letter_too_large_for_the_topic_goes_without_its_value(sync: bool) -> None:
    producer = AckingProducer(limit=100, sync=sync)
    big = DeadLetter(b"k", b"x" * 5000, [(DLQ_REASON, b"malformed_json"), ("source-header", b"y" * 5000)])
    deliver(producer, "items.dlq", [big], threading.Event(), 0.01)
    [sent] = producer.acked
    headers = dict(sent.headers)
    assert sent.value == b"" and sent.key == b"k" and headers[DLQ_TRUNCATED] == b"5000"
    assert headers[DLQ_REASON] == b"malformed_json" and "source-header" not in headers


def test_a_refusal_retrying_cannot_fix_ends_delivery_with_a_clear_error() -> None:
    producer = AckingProducer(refuse=TopicAuthorizationFailedError())
    with pytest.raises(DeadLetterRefused, match=r"`items.dlq` refused.*TopicAuthorizationFailedError.*Write"):
        deliver(producer, "items.dlq", [DeadLetter(b"k", b"v", [])], threading.Event(), 0.01)
    assert producer.sends == 1  # not retried forever


def test_a_truncated_letter_still_refused_ends_delivery() -> None:
    producer = AckingProducer(limit=-1)  # even an empty value is "too large"
    with pytest.raises(DeadLetterRefused, match="MessageSizeTooLargeError"):
        deliver(producer, "items.dlq", [DeadLetter(b"k", b"v" * 10, [])], threading.Event(), 0.01)
    assert producer.sends == 2


# --------------------------------------------------------------------------- liveness


class ManualHeartbeat:
    """A heartbeat whose age the test sets."""

    def __init__(self) -> None:
        self.age_s: float | None = None

    def age(self) -> float | None:
        return self.age_s


def test_liveness_follows_loop_progress() -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tandem.streams.metrics import HealthServer

    beat = ManualHeartbeat()
    server = HealthServer(0, heartbeat=beat, stale_after_s=5.0, check_every_s=0.02)  # type: ignore[arg-type]
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def status() -> int:
                return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status

            server.set(True)
            assert status() == health_pb2.HealthCheckResponse.SERVING  # no loop yet: nothing to follow
            beat.age_s = 1.0
            assert status() == health_pb2.HealthCheckResponse.SERVING
            beat.age_s = 60.0  # the loop is stuck
            threading.Event().wait(0.2)
            assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
            beat.age_s = 0.1  # it turned again
            threading.Event().wait(0.2)
            assert status() == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop()


class StuckAfterRefusal(AckingProducer):
    """Like kafka-python's idempotent producer: after the broker refused a record as too large,
    every later send to the partition fails the same way."""

    def send(self, topic: str, *, key: bytes | None, value: bytes, headers: list[Any]) -> Future:
        if getattr(self, "stuck", False):
            self.sends += 1
            return Future().failure(MessageSizeTooLargeError())
        fut = super().send(topic, key=key, value=value, headers=headers)
        self.stuck = fut.failed()
        return fut


def test_the_producer_is_renewed_after_a_broker_side_refusal() -> None:
    first, fresh = StuckAfterRefusal(limit=100), AckingProducer(limit=100)
    renewed: list[Any] = []

    def renew(old: Any) -> Any:
        renewed.append(old)
        return fresh

    big = DeadLetter(b"k", b"x" * 5000, [(DLQ_REASON, b"malformed_json")])
    assert deliver(first, "items.dlq", [big], threading.Event(), 0.01, renew=renew) is fresh
    assert renewed == [first] and dict(fresh.acked[0].headers)[DLQ_TRUNCATED] == b"5000"
