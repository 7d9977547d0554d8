"""Fault scenarios at small size against real servers (the ones ``python -m bench.faults`` measures).

Each asserts the acceptance bar of issue 12: nothing lost, nothing doubled, no failed
request, and the system recovers by itself once the fault ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tandem_testing import faults, feedback_faults, ingest_faults

if TYPE_CHECKING:
    from tandem_testing.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def restarted_broker() -> Iterator[KafkaBroker]:
    """A private broker that the two broker-restart scenarios restart in turn (each on its own
    topic and group), started once for both; never the suite's shared ``kafka_bootstrap``."""
    from tandem_testing.infra import KafkaBroker
    from tandem_testing.kafka_broker import FAST_UNFENCE

    with KafkaBroker(broker_config=FAST_UNFENCE) as broker:
        yield broker


def _clean(result: faults.ScenarioResult) -> None:
    figures = result.figures()
    assert (result.failures, result.lost, result.duplicated) == (0, 0, 0), figures
    assert result.count > 0 and result.recovery_s is not None, figures


def test_kafka_broker_restart_during_ingest_loses_nothing(tmp_path: Path, java_home: object,
                                                         restarted_broker: KafkaBroker) -> None:
    r = ingest_faults.kafka_broker_restart(tmp_path, n_items=60, publish_s=2.0, broker=restarted_broker)
    _clean(r)
    assert r.details["outage_s"] > 0 and r.details["items"] == 60
    # The broker went down between a batch's apply and its commit. kafka-python either
    # blocks that commit until the coordinator is back or fails it (then the consumer keeps
    # the offsets pending; before that was handled, the loop died and ~all events were lost).
    assert r.details["commit_met_outage"]


def test_consumer_sigkill_mid_batch_loses_and_doubles_nothing(
    tmp_path: Path, kafka_bootstrap: str, java_home: object
) -> None:
    r = ingest_faults.consumer_sigkill(tmp_path, kafka_bootstrap, n_items=60)
    _clean(r)
    assert 0 < r.details["applied_before_kill"] < r.details["distinct_events"], r.figures()


def test_feedback_survives_a_broker_restart_without_loss_or_double_counting(
    tmp_path: Path, restarted_broker: KafkaBroker
) -> None:
    r = feedback_faults.feedback_broker_restart(tmp_path, n_requests=90, publish_s=1.5, broker=restarted_broker)
    _clean(r)
    assert r.details["commit_met_outage"] and r.details["evidence_matches"], r.figures()


def test_feedback_replay_sigkilled_mid_stream_loses_and_doubles_nothing(tmp_path: Path, kafka_bootstrap: str) -> None:
    r = feedback_faults.feedback_consumer_sigkill(tmp_path, kafka_bootstrap, n_requests=120)
    _clean(r)
    assert 0 < r.details["stored_before_kill"] < r.count and r.details["evidence_matches"], r.figures()


def test_redis_restart_under_load_fails_no_search() -> None:
    r = faults.redis_restart(seconds=3.0)
    _clean(r)
    assert r.details["cache_hits"] > 0 and r.details["degraded"] == 0


def test_generative_killed_under_load_degrades_then_recovers(tmp_path: Path) -> None:
    r = faults.generative_killed(tmp_path, seconds=4.0, outage_s=1.0)
    _clean(r)
    assert r.details["searches_while_down"] > 0
    assert r.details["degraded_while_down"] == r.details["searches_while_down"]


def test_corrupt_artifact_is_refused_and_the_previous_version_keeps_serving(tmp_path: Path) -> None:
    r = faults.corrupt_artifact(tmp_path, seconds=1.5)
    _clean(r)
    assert r.details["refused"] >= 1 and r.details["logged"] and r.details["kept_serving"]
    assert r.details["served_corrupt"] == 0


def test_slow_retriever_answers_within_the_deadline_degraded() -> None:
    r = faults.slow_retriever(seconds=3.0, deadline_s=0.3, slow_s=1.0)
    _clean(r)
    assert r.details["searches_while_slow"] > 0
    assert r.details["degraded_while_slow"] == r.details["searches_while_slow"]
    assert r.details["late"] == 0


def test_poisoned_item_goes_to_the_dlq_with_its_rule(
    tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str]
) -> None:
    """Bad input at ingest: with action ``dlq`` a keyword-stuffed item is refused to the
    dead-letter topic with reason ``poisoning:<rule>``; clean items around it are applied."""
    from tandem.catalog.events import ItemEvent
    from tandem.catalog.item import Item
    from tandem.streams.apply import Applier
    from tandem.streams.config import StreamSettings
    from tandem.streams.consumer import IngestConsumer
    from tandem.streams.poisoning import PoisoningPolicy
    from tandem.streams.producer import EventProducer
    from tandem.streams.store import CatalogStore
    from tandem_testing.stream_catalog import synthetic_items
    from tandem_testing.topic_reader import read_topic

    topic, dlq = kafka_topic(), kafka_topic()
    clean = synthetic_items(5, start=90_000)
    stuffed = Item(item_id="stuffed-1", title="Drill drill DRILL drills drill cordless drill", version=1)
    settings = StreamSettings(kafka_bootstrap=kafka_bootstrap, items_topic=topic, dlq_topic=dlq)
    with EventProducer(settings) as producer:
        producer.publish([ItemEvent.upsert(clean[0], 1), ItemEvent.upsert(stuffed, 1),
                          *[ItemEvent.upsert(i, 1) for i in clean[1:]]])
    with CatalogStore(tmp_path / "c.sqlite") as store:
        consumer = IngestConsumer(Applier(store, None, PoisoningPolicy(action="dlq")), settings,
                                  group=f"g-{topic}")
        totals = consumer.run(max_idle_s=3.0)
        assert store.get("stuffed-1") is None and all(store.get(i.item_id) for i in clean)
    assert totals.applied == 5 and totals.reasons == {"poisoning:repetition": 1}
    dead = read_topic(kafka_bootstrap, dlq)  # the consumer has stopped: the DLQ is complete
    assert [r.key for r in dead] == [b"stuffed-1"]
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert headers["tandem-dlq-reason"] == "poisoning:repetition" and "'drill' x" in headers["tandem-dlq-error"]


def test_unreachable_kafka_at_commit_keeps_offsets_pending() -> None:
    """The regression bench.faults found: a commit that meets a broker outage used to raise out
    of the consume loop. Now the offsets stay pending and the next commit sends them."""
    from kafka.errors import KafkaConnectionError

    from tandem.streams.consumer import IngestConsumer

    class FlakyKafka:
        def __init__(self) -> None:
            self.calls: list[dict] = []

        def commit(self, offsets: dict) -> None:
            self.calls.append(dict(offsets))
            if len(self.calls) == 1:
                raise KafkaConnectionError("111 ECONNREFUSED")

    consumer = object.__new__(IngestConsumer)  # no broker needed to exercise the commit path
    consumer._kafka, consumer._pending, consumer._commit_retry_at = FlakyKafka(), {"tp0": 5}, 0.0
    consumer._commit()
    assert consumer._pending == {"tp0": 5} and consumer._commit_retry_at > 0
    consumer._commit_retry_at = 0.0
    consumer._retry_pending_commit()
    assert consumer._pending == {} and consumer._kafka.calls == [{"tp0": 5}, {"tp0": 5}]
