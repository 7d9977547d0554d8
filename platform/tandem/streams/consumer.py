"""The ingest consumer: Kafka item events → store + live index, at-least-once, effectively once.

Per poll: decode every record; malformed ones go to the dead-letter topic (acknowledged by
the broker before anything is committed, so a crash cannot lose them, and a broker outage is
waited out with the letters resent, not dropped); the rest are applied as one batch
(:class:`~tandem.streams.apply.Applier`); items its poisoning policy refuses (action ``dlq``)
and events whose store write fails on their own data (reason ``apply_error``) go to the
dead-letter topic too; only then are the batch's offsets committed. No single record can stop
the stream. A letter the dead-letter topic refuses as too large is sent again without its value
(header ``tandem-dlq-truncated`` = the value's size; the source coordinates find the original);
any other refusal that retrying cannot fix (authorisation, an invalid topic) ends the consumer
with :class:`DeadLetterRefused` naming the fix, instead of retrying forever.
Every loop turn beats :data:`tandem.streams.metrics.LOOP`, which the liveness probe follows,
and every 10 s measures the lag, re-seeks a partition the client stopped fetching and, when
that does not help, replaces the client (:mod:`tandem.streams.lag`).
A crash before the commit replays the batch, which the store's ``(item_id, version)`` log
turns into no-ops — so nothing is lost and nothing is doubled. Offsets are also committed
on graceful shutdown (SIGTERM/SIGINT finish the batch in hand first) and when a rebalance
revokes partitions.

:func:`ingest_file` is the embedded default source (a JSONL file), using the same applier.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem.catalog.events import EventError, ItemEvent, decode_event
from tandem.errors import InvalidInput, Unavailable
from tandem.streams import dead_letters
from tandem.streams.dead_letters import (  # noqa: F401 - re-exported: the consumer's dead-letter API
    DLQ_ERROR,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
    DLQ_TRUNCATED,
    DeadLetter,
    DeadLetterRefused,
)
from tandem.streams import lag, metrics
from tandem.streams.apply import Applier, BatchReport
from tandem.streams.config import StreamSettings
from tandem.streams.producer import read_event_file

log = logging.getLogger(__name__)

COMMIT_RETRY_S = 1.0
"""Seconds between retries of an offset commit that failed because Kafka was unreachable."""
DLQ_FLUSH_S = 30.0
"""Seconds one wait for the dead-letter producer lasts before the letters are checked again."""
ASSIGN_WAIT_S = 60.0
"""With ``max_idle_s``: how much longer than it a consumer waits for its first partitions."""

@dataclass
class IngestTotals:
    """Running totals of one consumer run."""

    events: int = 0
    applied: int = 0
    duplicates: int = 0
    stale: int = 0
    dead_lettered: int = 0
    quarantined: int = 0
    batches: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, report: BatchReport) -> None:
        """Fold one batch report in and update the Prometheus counters."""
        self.events += report.events
        self.applied += report.applied
        self.duplicates += report.duplicates
        self.stale += report.stale
        self.quarantined += report.quarantined
        self.batches += 1
        self.seconds += report.seconds
        metrics.EVENTS.labels("applied").inc(report.applied)
        metrics.EVENTS.labels("duplicate").inc(report.duplicates)
        metrics.EVENTS.labels("stale").inc(report.stale)
        metrics.BATCH_SECONDS.observe(report.seconds)
        metrics.LAST_APPLIED.set_to_current_time()

    def reject(self, reason: str) -> None:
        """Count one malformed event."""
        self.dead_lettered += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        metrics.EVENTS.labels("dlq").inc()


def _rebalance_listener(consumer: IngestConsumer) -> Any:
    from kafka import ConsumerRebalanceListener

    class CommitOnRevoke(ConsumerRebalanceListener):
        """Commits applied-but-uncommitted offsets of partitions being taken away."""

        def on_partitions_revoked(self, revoked: Any) -> None:
            # Runs on kafka-python's IO loop: a blocking commit here would stall it, so the
            # commit is queued (it is sent before the JoinGroup that follows).
            offsets = {tp: om for tp, om in consumer._pending.items() if tp in revoked}
            if offsets:
                log.info("rebalance: committing %d revoked partitions", len(offsets))
                consumer._kafka.commit_async(offsets)
                for tp in offsets:
                    consumer._pending.pop(tp, None)

        def on_partitions_assigned(self, assigned: Any) -> None:
            log.info("assigned partitions: %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))

    return CommitOnRevoke()


class IngestConsumer:
    """Kafka consumer-group member applying item events through an :class:`Applier`."""

    #: Record decoder (``decode=`` sets it per instance); item events by default, also for
    #: instances built without ``__init__`` (the broker-less test and fuzz harnesses).
    _decode: Callable[[bytes | None, bytes | None], Any] = staticmethod(decode_event)

    def __init__(
        self,
        applier: Applier,
        settings: StreamSettings | None = None,
        *,
        group: str | None = None,
        topic: str | None = None,
        dlq_topic: str | None = None,
        max_batch: int = 500,
        poll_timeout_ms: int = 100,
        decode: Callable[[bytes | None, bytes | None], Any] = decode_event,
        **overrides: Any,
    ) -> None:
        from kafka import KafkaConsumer, KafkaProducer
        from kafka.errors import KafkaError

        self.settings = settings or StreamSettings()
        if not self.settings.kafka_bootstrap:
            raise InvalidInput("`TANDEM_KAFKA_BOOTSTRAP` is not set; use `--from-file` without a broker")
        if max_batch < 1:
            raise InvalidInput("`max_batch` must be >= 1")
        self.applier = applier
        # Another record type on the same machinery (feedback events): its decoder raises an
        # EventError subclass, which dead-letters the record like a malformed item event.
        self._decode = decode
        self.topic = topic or self.settings.items_topic
        self.dlq_topic = dlq_topic or self.settings.dlq_topic
        self.group = group or self.settings.consumer_group
        self.max_batch = max_batch
        self.poll_timeout_ms = poll_timeout_ms
        self.totals = IngestTotals()
        self.lag_watch = lag.LagWatch()  # lag, and the cure of partitions the client stops fetching
        self._stop = threading.Event()
        self._pending: dict[Any, Any] = {}
        self._commit_retry_at = 0.0
        servers = self.settings.kafka_bootstrap.split(",")
        security = self.settings.kafka_client_config()
        conf: dict[str, Any] = {
            "bootstrap_servers": servers,
            "group_id": self.group,
            "client_id": "tandem-ingest",
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": max_batch,
            # Short fetch wait: freshness (publish → searchable) matters more than batching here.
            "fetch_max_wait_ms": 50,
            "session_timeout_ms": 10000,
            "heartbeat_interval_ms": 3000,
            **security,
            **overrides,
        }
        self._conf = conf
        try:
            self._kafka = KafkaConsumer(**conf)
            self._dlq_conf = {"bootstrap_servers": servers, "client_id": "tandem-ingest-dlq",
                              "enable_idempotence": True, "acks": "all", **security}
            self._dlq = KafkaProducer(**self._dlq_conf)
        except KafkaError as e:
            raise Unavailable(f"Kafka at {self.settings.kafka_bootstrap} is unreachable: {e}") from e

    def _wait_for_topic_metadata(self, timeout_s: float = 30.0) -> None:
        """Block until this client's metadata lists the topic's partitions.

        A member that joins the group before its metadata knows the topic gets an empty
        assignment ("No partition metadata") and, under load, may sit on it until the next
        metadata refresh (``metadata_max_age_ms``, minutes). Seen in CI; fetching the
        topic's partitions first makes the first join assign real partitions.
        """
        deadline = time.monotonic() + timeout_s
        while not self._kafka.partitions_for_topic(self.topic):
            if time.monotonic() > deadline:
                raise Unavailable(f"topic `{self.topic}` has no partition metadata after {timeout_s:.0f} s; "
                                  "does it exist?")
            time.sleep(0.2)

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand, commit and return (safe from signal handlers)."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT call :meth:`stop` (main thread only)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def run(self, *, max_idle_s: float | None = None, on_batch: Any = None) -> IngestTotals:
        """Consume until :meth:`stop` (or ``max_idle_s`` without records); returns the totals.

        The idle clock starts once partitions are assigned (a slow group join is not idleness);
        with none within ``max_idle_s + ASSIGN_WAIT_S`` the consumer logs it and stops."""
        from kafka.errors import KafkaError

        self._wait_for_topic_metadata()
        self._kafka.subscribe([self.topic], listener=_rebalance_listener(self))
        started = idle_since = time.monotonic()
        assigned = False
        try:
            while not self._stop.is_set():
                metrics.LOOP.beat()
                self.lag_watch.maybe_check(self._kafka)
                if self.lag_watch.rebuild_due:
                    self._rebuild_client()
                try:
                    records = self._kafka.poll(timeout_ms=self.poll_timeout_ms, max_records=self.max_batch)
                except KafkaError as e:
                    log.warning("poll failed (%s); retrying", e)
                    time.sleep(0.5)
                    continue
                if not records:
                    self._retry_pending_commit()
                    if max_idle_s is None:
                        continue
                    now = time.monotonic()
                    if not assigned and self._kafka.assignment():
                        assigned, idle_since = True, now
                    if assigned and now - idle_since > max_idle_s:
                        break
                    if not assigned and now - started > max_idle_s + ASSIGN_WAIT_S:
                        log.warning("no partition of %s assigned within %.0f s; stopping", self.topic, now - started)
                        break
                    continue
                assigned = True
                idle_since = time.monotonic()
                report = self._process(records)
                if on_batch is not None:
                    on_batch(report)
        finally:
            self._shutdown()
        return self.totals

    def _rebuild_client(self) -> None:
        """Replace a client stuck through re-seeks (:mod:`tandem.streams.lag`); offsets are committed
        only after a batch is applied, so the new member resumes where this one stood."""
        from kafka import KafkaConsumer

        log.warning("Kafka client stuck after re-seeks; replacing it. Its partitions: %.1500s",
                    lag.client_states(self._kafka))
        lag.REBUILDS.inc()
        self._commit()
        self._kafka.close(autocommit=False)
        self._kafka = KafkaConsumer(**self._conf)
        self._kafka.subscribe([self.topic], listener=_rebalance_listener(self))
        self.lag_watch.reset()

    def _process(self, records: dict[Any, list[Any]]) -> BatchReport:
        from kafka.structs import OffsetAndMetadata

        good: list[ItemEvent] = []
        sources: list[Any] = []  # the record each good event came from, for dead-lettering
        offsets: dict[Any, Any] = {}
        letters: list[DeadLetter] = []
        # Records of one key sit in one partition in order, so partition-by-partition
        # concatenation keeps every item's events in publish order.
        for tp, recs in records.items():
            for rec in recs:
                try:
                    good.append(self._decode(rec.key, rec.value))
                    sources.append(rec)
                except EventError as e:
                    letters.append(self._dead_letter(rec, str(e.reason), str(e)))
                offsets[tp] = OffsetAndMetadata(rec.offset + 1, "", -1)
        # A crash between the store write and the DLQ delivery below replays the batch: refused
        # events were never stored, so the replay refuses (and dead-letters) them again.
        report = self.applier.apply(good)
        for pos, verdict in report.refused:
            letters.append(self._dead_letter(sources[pos], verdict.reason, verdict.describe()))
        self._deliver(letters)  # the DLQ copies must be durable before the commit
        self.totals.add(report)
        metrics.STORE_SEQ.set(self.applier.store.seq)
        self._pending.update(offsets)
        self._commit()
        return report

    def _dead_letter(self, rec: Any, reason: str, error: str) -> DeadLetter:
        """The dead-letter copy of ``rec`` (:func:`~tandem.streams.dead_letters.letter_for`), counted."""
        self.totals.reject(reason)
        log.warning("dead-lettered %s[%d]@%d: %s (%.300s)", rec.topic, rec.partition, rec.offset, reason, error)
        return dead_letters.letter_for(rec, reason, error)

    def _deliver(self, letters: list[DeadLetter]) -> None:
        """Deliver ``letters`` before the batch is committed (:func:`~tandem.streams.dead_letters.deliver`)."""
        self._dlq = dead_letters.deliver(self._dlq, self.dlq_topic, letters, self._stop, DLQ_FLUSH_S,
                                         renew=self._renew_dlq)

    def _renew_dlq(self, old: Any) -> Any:
        """A fresh dead-letter producer (new producer id) in place of ``old``, which is closed."""
        from kafka import KafkaProducer

        old.close(timeout=1)
        return KafkaProducer(**self._dlq_conf)

    def _commit(self) -> None:
        if not self._pending:
            return
        from kafka.errors import CommitFailedError, KafkaError

        try:
            self._kafka.commit(dict(self._pending))
            self._pending.clear()
        except CommitFailedError as e:
            # The group rebalanced under us; the batch is applied, so the next owner's
            # replay of it is a run of duplicates. Nothing to undo.
            log.warning("offset commit refused after a rebalance: %s", e)
            self._pending.clear()
        except KafkaError as e:
            # The broker or group coordinator is unreachable (a broker restart, a network
            # blip). The batch is applied, so keep its offsets pending: they are committed
            # with the next batch, by the idle loop, or at shutdown; if this process dies
            # first, the replay is a run of duplicates. Found by bench.faults: letting this
            # escape ended the consume loop during a broker restart.
            self._commit_retry_at = time.monotonic() + COMMIT_RETRY_S
            log.warning("offset commit failed (%s); keeping %d partitions pending", e, len(self._pending))

    def _retry_pending_commit(self) -> None:
        """While idle: retry a failed commit, at most every ``COMMIT_RETRY_S`` seconds."""
        if self._pending and time.monotonic() >= self._commit_retry_at:
            self._commit()

    def _shutdown(self) -> None:
        try:
            self._commit()
        finally:
            self._kafka.close(autocommit=False)
            self._dlq.close()


def _chunks(lines: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for x in lines:
        chunk.append(x)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def ingest_file(
    path: str | Path, applier: Applier, *, batch_size: int = 500, rejects: str | Path | None = None
) -> IngestTotals:
    """Apply a JSONL file of events (or bare items) through ``applier``: the embedded source.

    There is no offset to commit: re-running a file is safe because applying is idempotent.
    Refused lines are logged, counted and, with ``rejects``, written there with the reason.
    """
    import json

    totals = IngestTotals()
    out = Path(rejects).open("w", encoding="utf-8") if rejects else None
    try:
        for chunk in _chunks(read_event_file(path), batch_size):
            events = []
            for line in chunk:
                if line.error is not None:
                    totals.reject(str(line.error.reason))
                    log.warning("%s:%d refused: %s", path, line.lineno, line.error)
                    if out:
                        row = {"line": line.lineno, "reason": str(line.error.reason), "error": str(line.error)}
                        out.write(json.dumps(row) + "\n")
                else:
                    events.append((line.lineno, line.event))
            report = applier.apply([ev for _, ev in events])
            totals.add(report)
            for pos, verdict in report.refused:
                lineno = events[pos][0]
                totals.reject(verdict.reason)
                log.warning("%s:%d refused: %s (%s)", path, lineno, verdict.reason, verdict.describe())
                if out:
                    row = {"line": lineno, "reason": verdict.reason, "error": verdict.describe()}
                    out.write(json.dumps(row) + "\n")
    finally:
        if out:
            out.close()
    return totals
