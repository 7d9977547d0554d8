"""Feedback on Kafka: the idempotent producer behind ``FeedbackService`` and the replay of
``tandem.feedback`` into the local :class:`~tandem.feedback.store.FeedbackStore`.

Both reuse the item stream's machinery rather than copies of it: the producer is
:class:`~tandem.streams.producer.EventProducer` (``enable_idempotence``, ``acks=all``) on the
feedback topic, and the replay is :class:`~tandem.streams.consumer.IngestConsumer` with the
feedback decoder and :class:`FeedbackApplier`: offsets are committed only after the store
write, refused records go to the dead-letter topic first, and the store's ``event_id`` key
turns a replayed batch into duplicates. So a broker restart or a killed consumer loses no
event and counts none twice.

Without a broker, :class:`JsonlFeedbackSink` appends events to a file (the embedded
default) and :func:`replay_file` loads such a file into the store.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tandem.errors import InvalidInput, Unavailable
from tandem.feedback.events import FeedbackError, FeedbackEvent, decode_feedback, encode_feedback
from tandem.feedback.store import FeedbackStore
from tandem.streams.apply import BatchReport
from tandem.streams.config import StreamSettings

SEND_TIMEOUT_S = 10.0
"""Longest wait for the broker to acknowledge one call's events before UNAVAILABLE."""


class FeedbackSink(Protocol):
    """Where accepted feedback goes. ``send`` returns once the events are durable."""

    def send(self, events: Sequence[FeedbackEvent]) -> None:
        """Make ``events`` durable or raise :class:`~tandem.errors.Unavailable`."""
        ...

    def close(self) -> None:
        """Flush and release the sink."""
        ...


class KafkaFeedbackSink:
    """Publishes to the feedback topic through the idempotent :class:`EventProducer`."""

    def __init__(self, settings: StreamSettings | None = None, *, topic: str | None = None) -> None:
        from tandem.streams.producer import EventProducer

        self.settings = settings or StreamSettings()
        self.topic = topic or self.settings.feedback_topic
        # max_block_ms: with the broker away a send must fail within a call's budget, not 60 s.
        self._producer = EventProducer(self.settings, topic=self.topic, client_id="tandem-feedback",
                                       max_block_ms=int(SEND_TIMEOUT_S * 1000))

    def send(self, events: Sequence[FeedbackEvent]) -> None:
        """Send and wait for every acknowledgement (``acks=all``)."""
        from kafka.errors import KafkaError

        try:
            futures = [self._producer.send_raw(*encode_feedback(e)) for e in events]
            self._producer.flush(SEND_TIMEOUT_S)
            for f in futures:
                f.get(timeout=SEND_TIMEOUT_S)
        except KafkaError as e:
            raise Unavailable(f"the feedback topic `{self.topic}` did not acknowledge the events: {e}") from e

    def close(self) -> None:
        """Flush and close the producer."""
        self._producer.close()


class JsonlFeedbackSink:
    """Appends events as JSON lines to ``path`` (flushed and fsynced per call)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._mu = threading.Lock()

    def send(self, events: Sequence[FeedbackEvent]) -> None:
        """Append and fsync."""
        import os

        lines = "".join(json.dumps(e.to_dict(), separators=(",", ":")) + "\n" for e in events)
        with self._mu:
            self._file.write(lines)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file."""
        with self._mu:
            self._file.close()


class FeedbackApplier:
    """The :class:`~tandem.streams.consumer.IngestConsumer` applier for feedback: one store
    transaction per batch; duplicates (same ``event_id``) are counted, not stored again."""

    def __init__(self, store: FeedbackStore) -> None:
        self.store = store

    def apply(self, events: Sequence[FeedbackEvent]) -> BatchReport:
        """Store ``events``; a :class:`BatchReport` in the ingest consumer's terms."""
        started = time.perf_counter()
        added, duplicates = self.store.add(events)
        return BatchReport(events=len(events), applied=added, duplicates=duplicates, stale=0, indexed=0,
                           seconds=time.perf_counter() - started)


def feedback_consumer(store: FeedbackStore, settings: StreamSettings | None = None, *, group: str | None = None,
                      topic: str | None = None, dlq_topic: str | None = None, max_batch: int = 500,
                      applier: FeedbackApplier | None = None, **overrides: Any) -> Any:
    """An :class:`~tandem.streams.consumer.IngestConsumer` replaying the feedback topic into
    ``store`` (call ``run()`` on it); ``applier`` replaces the plain :class:`FeedbackApplier`
    (fault tests hold a batch between store write and commit)."""
    from tandem.streams.consumer import IngestConsumer

    settings = settings or StreamSettings()
    return IngestConsumer(applier or FeedbackApplier(store), settings,  # type: ignore[arg-type]  # duck-typed
                          group=group or settings.feedback_group, topic=topic or settings.feedback_topic,
                          dlq_topic=dlq_topic or settings.feedback_dlq_topic, max_batch=max_batch,
                          decode=decode_feedback, **overrides)


def replay_file(path: str | Path, store: FeedbackStore, *, batch_size: int = 1000) -> tuple[int, int, int]:
    """Load a JSONL feedback file (:class:`JsonlFeedbackSink`'s) into ``store``; returns
    ``(added, duplicates, refused)``. Re-running it is safe (events are keyed by id)."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"`FILE` {p} does not exist")
    added = duplicates = refused = 0
    batch: list[FeedbackEvent] = []
    with p.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                batch.append(decode_feedback(None, line))
            except FeedbackError:
                refused += 1
            if len(batch) >= batch_size:
                a, d = store.add(batch)
                added, duplicates, batch = added + a, duplicates + d, []
    a, d = store.add(batch)
    return added + a, duplicates + d, refused
