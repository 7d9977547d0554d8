"""Property-based fuzzing of the ingest write path: :meth:`CatalogStore.apply` and the
consumer's per-record path (decode → apply → dead-letter → commit), issue 19's "no poison pill".

* ``store_apply`` — batches mixing valid events with events built *without* validation
  (versions far beyond SQLite's 64-bit integers, lone surrogates, an upsert without its item):
  ``apply`` never raises, accounts for every event (applied + duplicates + stale + failed),
  stores nothing of a failed one, and keeps ``seq`` dense.
* ``consumer_record`` — Kafka records as any producer could write them
  (:func:`tandem_testing.fuzz_events.event_records`, plus values with huge versions) through
  ``IngestConsumer._process`` with the poisoning action ``dlq``: it never raises, every record is
  either applied (or a duplicate/stale) or dead-lettered with a reason, and the partition's offset
  is committed past the last record (no stall).

Failures are :class:`tandem_testing.fuzz.FuzzFailure` (``crash``, ``stall`` or ``contract``);
``tests/unit/test_fuzz_ingest.py`` runs a few hundred examples, ``python -m bench.faults_fuzz``
10,000+.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from hypothesis import strategies as st

from tandem.catalog.events import ItemEvent
from tandem.catalog.item import Item
from tandem_testing.fuzz import FuzzFailure, _crash, full_text
from tandem_testing.fuzz_events import event_records

_ids = st.sampled_from(["a", "b", "c", "d"])
_wild_versions = st.one_of(st.integers(0, 3), st.integers(2**63 - 2, 2**63 + 2), st.integers(-(2**70), 2**70))
_wild_text = st.one_of(st.just("Drill"), full_text.filter(bool), st.just("x\ud800"))


def _valid_event() -> st.SearchStrategy[ItemEvent]:
    upsert = st.builds(lambda i, v, t: ItemEvent.upsert(Item(item_id=i, title=t), v),
                       _ids, st.integers(0, 3), st.sampled_from(["Drill", "Saw", "Paint"]))
    delete = st.builds(ItemEvent.delete, _ids, st.integers(0, 3))
    return st.one_of(upsert, delete)


def _unchecked_event() -> st.SearchStrategy[ItemEvent]:
    """An event no validation saw: what a bug upstream of ``apply`` could hand it."""

    def make(op: str, item_id: str, version: int, title: str, with_item: bool) -> ItemEvent:
        item = Item.model_construct(item_id=item_id, title=title, description=None, brand=None, category=[],
                                    attributes={}, price=None, version=version) if with_item else None
        return ItemEvent.model_construct(op=op, item_id=item_id, version=version, item=item)

    return st.builds(make, st.sampled_from(["upsert", "delete", "merge"]), st.one_of(_ids, st.just("e\ud800")),
                     _wild_versions, _wild_text, st.booleans())


def event_batches() -> st.SearchStrategy[list[ItemEvent]]:
    """Batches of up to 12 events, most valid, some unchecked, on a few shared ids."""
    return st.lists(st.one_of(_valid_event(), _valid_event(), _unchecked_event()), max_size=12)


def check_store_apply(store: Any, events: list[ItemEvent]) -> str:
    """One ``apply`` call on ``store``; returns ``"ok"`` or ``"failures"`` (some events refused)."""
    seq_before, before = store.seq, store.versions()
    try:
        result = store.apply(events)
    except Exception as exc:
        raise _crash("CatalogStore.apply", exc, events) from exc
    if result.total != len(events):
        raise FuzzFailure(f"apply accounted for {result.total} of {len(events)} events: {events!r:.300}")
    if [c.seq for c in result.applied] != list(range(seq_before + 1, seq_before + 1 + len(result.applied))) \
            or store.seq != seq_before + len(result.applied):
        raise FuzzFailure(f"seq not dense: {[c.seq for c in result.applied]} after {seq_before}, store {store.seq}")
    positions = [f.position for f in result.failed]
    if positions != sorted(set(positions)) or any(not f.reason or not f.message for f in result.failed):
        raise FuzzFailure(f"bad failure reports {result.failed!r:.300}")
    after = store.versions()
    for f in result.failed:
        ev = events[f.position]
        twins = any((e.item_id, e.version) == (ev.item_id, ev.version) for n, e in enumerate(events) if n != f.position)
        key = ev.item_id if isinstance(ev.item_id, str) else None
        if not twins and key in after and after[key][0] == ev.version and before.get(key) != after[key]:
            raise FuzzFailure(f"a failed event reached the store: {ev!r:.200}")
    return "failures" if result.failed else "ok"


class _Kafka:
    def __init__(self) -> None:
        self.committed: dict[Any, Any] = {}

    def commit(self, offsets: dict[Any, Any]) -> None:
        self.committed.update(offsets)


class _Producer:
    """A dead-letter producer whose broker acknowledges every send."""

    def __init__(self) -> None:
        self.letters: list[tuple[Any, Any, list[tuple[str, bytes]]]] = []

    def send(self, topic: str, *, key: Any, value: Any, headers: list[tuple[str, bytes]]) -> Any:
        from kafka.future import Future

        self.letters.append((key, value, headers))
        return Future().success(None)

    def flush(self, timeout: float | None = None) -> None:
        pass


def consumer_for(store: Any) -> Any:
    """An :class:`~tandem.streams.consumer.IngestConsumer` with no broker (fake commit and
    dead-letter producer) applying to ``store`` with the poisoning action ``dlq``."""
    from tandem.streams.apply import Applier
    from tandem.streams.consumer import IngestConsumer, IngestTotals
    from tandem.catalog.events import decode_event
    from tandem.streams.poisoning import PoisoningPolicy

    c = IngestConsumer.__new__(IngestConsumer)
    c.applier, c._decode = Applier(store, None, PoisoningPolicy(action="dlq")), decode_event
    c.dlq_topic, c._stop, c._pending, c._commit_retry_at = "items.dlq", threading.Event(), {}, 0.0
    c.totals = IngestTotals()
    return c


_huge_records = st.builds(
    lambda i, v: (i.encode(), ('{"op":"upsert","item":{"item_id":"%s","title":"x"},"version":%d}' % (i, v)).encode()),  # noqa: UP031 (JSON braces)
    _ids, _wild_versions)


def record_batches() -> st.SearchStrategy[list[tuple[Any, Any]]]:
    """Polls of up to 8 records: fuzzed records and near-valid ones with wild versions."""
    return st.lists(st.one_of(event_records(), _huge_records), min_size=1, max_size=8)


def check_consumer_records(consumer: Any, records: list[tuple[Any, Any]]) -> str:
    """``consumer._process`` on one poll of ``records`` (partition 0, offsets from 0)."""
    consumer._kafka, consumer._dlq = _Kafka(), _Producer()
    rejected_before = consumer.totals.dead_lettered
    recs = [SimpleNamespace(topic="items", partition=0, offset=n, key=k, value=v, headers=[])
            for n, (k, v) in enumerate(records)]
    tp = ("items", 0)
    try:
        report = consumer._process({tp: recs})
    except Exception as exc:
        raise _crash("IngestConsumer._process", exc, records) from exc
    committed = consumer._kafka.committed.get(tp)
    if committed is None or committed.offset != len(records):
        raise FuzzFailure(f"stalled: committed {committed!r} after {len(records)} records: {records!r:.300}", "stall")
    lettered = consumer.totals.dead_lettered - rejected_before
    if len(consumer._dlq.letters) != lettered:
        raise FuzzFailure(f"{lettered} records refused but {len(consumer._dlq.letters)} dead letters sent")
    if any(not dict(h).get("tandem-dlq-reason") for _, _, h in consumer._dlq.letters):
        raise FuzzFailure("a dead letter without a reason")
    seen = report.applied + report.duplicates + report.stale + lettered
    if seen != len(records):
        raise FuzzFailure(f"{seen} of {len(records)} records accounted for: {records!r:.300}")
    return "dead_lettered" if lettered else "ok"
