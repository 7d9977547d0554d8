"""Fuzzing of the ingest write path (issue 19, no poison pill): CatalogStore.apply and the
consumer's per-record path never raise, account for every event and never stall."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tandem.streams.store import CatalogStore
from tandem_testing.fuzz_ingest import (
    check_consumer_records,
    check_store_apply,
    consumer_for,
    event_batches,
    record_batches,
)

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(event_batches())
def test_store_apply_never_crashes(batch) -> None:
    with CatalogStore(":memory:") as store:
        check_store_apply(store, batch)
        check_store_apply(store, batch)  # the replay: duplicates and stale versions, never a crash


@FUZZ
@given(record_batches())
def test_consumer_per_record_path_never_crashes_or_stalls(records) -> None:
    with CatalogStore(":memory:") as store:
        consumer = consumer_for(store)
        check_consumer_records(consumer, records)
        check_consumer_records(consumer, records)  # the replay after a crash before the commit


def test_the_version_that_stopped_all_ingest() -> None:
    with CatalogStore(":memory:") as store:
        records = [(b"a", b'{"op":"upsert","item":{"item_id":"a","title":"x"},"version":9223372036854775808}'),
                   (b"b", b'{"op":"upsert","item":{"item_id":"b","title":"x"},"version":1}')]
        assert check_consumer_records(consumer_for(store), records) == "dead_lettered"
        assert store.get("b") is not None
