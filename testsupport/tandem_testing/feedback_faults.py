"""Feedback-path fault scenarios (issue 21): the Kafka broker restarted while feedback is
recorded and replayed, and ``tandem stream feedback`` SIGKILLed mid-stream. Both must lose no
event and count none twice. See :mod:`tandem_testing.faults` for the result type.

The producer side is :class:`~tandem.feedback.stream.KafkaFeedbackSink`, exactly what
``FeedbackService.Record`` calls, with a client that retries a call the service answered
``UNAVAILABLE`` (what the proto asks of clients). The consumer side is the replay into the
:class:`~tandem.feedback.store.FeedbackStore`. The audit counts independently of the store's
``event_id`` key: *lost* = sent events whose content (request, item, kind, position) is not
in the store; *duplicated* = stored rows beyond one per content; and the canary's evidence
read from the store (requests and clicked requests per arm) must equal the one computed from
what was sent: a double-counted click would change it.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tandem.feedback.events import FeedbackEvent
from tandem.feedback.stream import FeedbackApplier
from tandem_testing.fault_harness import ScenarioResult
from tandem_testing.ingest_faults import HoldBatchMixin, _wait, restart_at_held_batch, restartable_broker

if TYPE_CHECKING:
    from tandem_testing.kafka_broker import KafkaBroker

log = logging.getLogger(__name__)

_REPO = Path(__file__).resolve().parents[2]
T0 = 1_767_225_600.0
"""2026-01-01T00:00:00Z: fixed timestamps, so a resent event is the same event."""


def synthetic_feedback(n_requests: int, *, start: int = 0) -> list[FeedbackEvent]:
    """Feedback of ``n_requests`` responses: 5 impressions each, alternately from the current
    and the candidate arm, a click on position ``1 + i % 5`` of every second request and a
    purchase after every seventh click; in publish order."""
    out: list[FeedbackEvent] = []
    for i in range(start, start + n_requests):
        rid, user, arm = f"req-{i}", f"user-{i % 97}", ("current", "candidate")[i % 2]
        ts = T0 + i
        out += [FeedbackEvent(rid, user, f"item-{(i * 7 + p) % 500}", "impression", p, ts, arm) for p in range(1, 6)]
        if i % 2 == 0:
            p = 1 + i % 5
            item = f"item-{(i * 7 + p) % 500}"
            out.append(FeedbackEvent(rid, user, item, "click", p, ts + 0.5, arm))
            if i % 14 == 0:
                out.append(FeedbackEvent(rid, user, item, "purchase", p, ts + 1.0, arm))
    return out


def _content(e: FeedbackEvent) -> tuple[str, str, str, int]:
    return e.request_id, e.item_id, e.kind, e.position


def audit_feedback(store_path: Path, sent: Sequence[FeedbackEvent]) -> dict[str, Any]:
    """``lost``, ``duplicated`` and whether the store's canary evidence matches what was sent."""
    from tandem.canary.evidence import read_evidence
    from tandem.feedback.store import FeedbackStore

    db = sqlite3.connect(str(store_path))
    try:
        rows = db.execute("SELECT request_id, item_id, kind, position FROM feedback").fetchall()
    finally:
        db.close()
    stored: dict[tuple[str, str, str, int], int] = {}
    for r in rows:
        key = (str(r[0]), str(r[1]), str(r[2]), int(r[3]))
        stored[key] = stored.get(key, 0) + 1
    want = {_content(e) for e in sent}
    with FeedbackStore(store_path) as store:
        got = read_evidence(store)
    expect = {"current": [0, 0], "candidate": [0, 0]}
    clicked = {e.request_id for e in sent if e.kind == "click"}
    for rid, arm in {e.request_id: e.arm for e in sent}.items():
        expect[arm][0] += 1
        expect[arm][1] += int(rid in clicked)
    evidence = {arm: [got.requests[arm], got.clicked[arm]] for arm in expect}
    return {"lost": len(want - set(stored)), "duplicated": sum(n - 1 for n in stored.values()),
            "unexpected": len(set(stored) - want), "evidence": evidence, "evidence_expected": expect,
            "evidence_matches": evidence == expect}


class _HoldOneBatch(HoldBatchMixin, FeedbackApplier):
    """The feedback applier that holds one stored batch before its commit, on demand."""


def _retrying_send(sink: Any, chunk: Sequence[FeedbackEvent], counts: dict[str, int], give_up_s: float) -> None:
    """``FeedbackService.Record``'s contract from the client side: retry UNAVAILABLE."""
    from tandem.errors import Unavailable

    give_up = time.monotonic() + give_up_s
    while True:
        try:
            sink.send(chunk)
            counts["events"] += len(chunk)
            return
        except Unavailable as e:
            counts["retries"] += 1
            if time.monotonic() > give_up:
                log.error("giving up on %d feedback events: %s", len(chunk), e)
                counts["failed"] += len(chunk)
                return
            time.sleep(0.2)


def feedback_broker_restart(work: Path, n_requests: int = 120, publish_s: float = 2.0,
                            broker: KafkaBroker | None = None) -> ScenarioResult:
    """Kafka restarted while feedback is sent (in acknowledged calls, retried on UNAVAILABLE)
    and replayed into the store; the broker goes down while the replay holds a stored but
    uncommitted batch. recovery = broker back → first event stored after it. ``broker``: a
    broker to restart instead of a private one (:func:`~tandem_testing.ingest_faults.restartable_broker`)."""
    from kafka import KafkaAdminClient

    from tandem.feedback.store import FeedbackStore
    from tandem.feedback.stream import KafkaFeedbackSink, feedback_consumer
    from tandem.jvm import ensure_jvm
    from tandem.streams.config import StreamSettings
    ensure_jvm()
    events = synthetic_feedback(n_requests)
    store_path = work / "feedback.sqlite"
    with restartable_broker(work, broker) as broker:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics({"fb": {"num_partitions": 3, "replication_factor": 1}}, wait_for_metadata=True)
        admin.close()
        settings = StreamSettings(kafka_bootstrap=broker.bootstrap, feedback_topic="fb", feedback_dlq_topic="fb.dlq")
        store = FeedbackStore(store_path)
        applier = _HoldOneBatch(store)
        consumer = feedback_consumer(store, settings, group="faults-fb", max_batch=20, applier=applier,
                                     reconnect_backoff_max_ms=500)
        worker = threading.Thread(target=consumer.run, name="feedback-replay", daemon=True)
        worker.start()
        counts = {"events": 0, "retries": 0, "failed": 0}

        def publisher() -> None:
            sink = KafkaFeedbackSink(settings)
            try:
                step = 12
                pause = publish_s / max(1, len(events) / step)
                for i in range(0, len(events), step):
                    _retrying_send(sink, events[i:i + step], counts, give_up_s=60)
                    time.sleep(pause)
            finally:
                sink.close()

        pub = threading.Thread(target=publisher, name="feedback-client", daemon=True)
        pub.start()
        try:
            _wait(lambda: counts["events"] >= len(events) * 0.35, 60)
            held, t_down, back = restart_at_held_batch(broker, applier)
            seq_back = store.seq
            resumed = _wait(lambda: store.seq > seq_back, 60, poll_s=0.01)
            recovery = time.monotonic() - back if resumed else None
            pub.join(timeout=120)
            _wait(lambda: store.counts()["events"] >= len(events), 60)
        finally:
            pub.join(timeout=30)
            consumer.stop()
            worker.join(timeout=60)
            store.close()
        audit = audit_feedback(store_path, events)
    return ScenarioResult(
        "feedback_broker_restart", "events", len(events),
        failures=counts["failed"] + consumer.totals.dead_lettered + int(not audit["evidence_matches"]),
        lost=audit["lost"], duplicated=audit["duplicated"] + audit["unexpected"],
        recovery_s=None if recovery is None else round(recovery, 3),
        details={"commit_met_outage": held, "outage_s": round(back - t_down, 3), "send_retries": counts["retries"],
                 "replayed_duplicates": consumer.totals.duplicates, "evidence_matches": audit["evidence_matches"]},
    )


def _replay_cli(args: list[str], log_file: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tandem_app.cli", "stream", "feedback", *args], cwd=_REPO,
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"})


def feedback_consumer_sigkill(work: Path, bootstrap: str, n_requests: int = 150, kill_at: float = 0.3) -> ScenarioResult:
    """``tandem stream feedback`` SIGKILLed once ``kill_at`` of the events are stored, then
    restarted; it resumes from the committed offsets (batches of 8, so the kill lands between
    a batch's store write and its commit) and is stopped with SIGTERM once every event is
    stored (or after a minute). recovery = restart →
    first newly stored event (includes the process start)."""
    import uuid

    from kafka import KafkaAdminClient

    from tandem.feedback.stream import KafkaFeedbackSink
    from tandem.streams.config import StreamSettings

    work.mkdir(parents=True, exist_ok=True)
    topic, group = f"faults.fb.{uuid.uuid4().hex[:8]}", f"faults-fb-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": 3, "replication_factor": 1},
                         topic + ".dlq": {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)
    events = synthetic_feedback(n_requests, start=10_000)
    store_path, log_file = work / "feedback.sqlite", work / "replay.log"
    env = {"TANDEM_FEEDBACK_TOPIC": topic, "TANDEM_FEEDBACK_DLQ_TOPIC": topic + ".dlq"}
    args = ["--bootstrap", bootstrap, "--group", group, "--store", str(store_path), "--max-batch", "8"]

    def stored() -> int:
        if not store_path.exists():
            return 0
        db = sqlite3.connect(str(store_path))
        try:
            return int(db.execute("SELECT COUNT(*) FROM feedback").fetchone()[0])
        except sqlite3.OperationalError:  # the table is not created yet
            return 0
        finally:
            db.close()

    try:
        sink = KafkaFeedbackSink(StreamSettings(kafka_bootstrap=bootstrap), topic=topic)
        sink.send(events)
        sink.close()
        proc = _replay_cli(args, log_file, env)
        killed_at, recovery, exit_code = 0, None, -1
        try:
            if not _wait(lambda: stored() >= len(events) * kill_at or proc.poll() is not None, 90):
                raise TimeoutError("the replay stored too little in 90 s:\n" + log_file.read_text()[-2000:])
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            killed_at = stored()
            restarted = time.monotonic()
            proc = _replay_cli(args, log_file, env)  # joins once the killed member's session expires
            resumed = _wait(lambda: stored() > killed_at, 90, poll_s=0.02)
            recovery = time.monotonic() - restarted if resumed else None
            _wait(lambda: stored() >= len(events), 60, poll_s=0.1)
            time.sleep(0.5)  # a duplicate replayed after the last new event would land now
            proc.send_signal(signal.SIGTERM)
            exit_code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        audit = audit_feedback(store_path, events)
    finally:
        admin.delete_topics([topic, topic + ".dlq"])
        admin.close()
    return ScenarioResult(
        "feedback_consumer_sigkill", "events", len(events),
        failures=int(exit_code != 0) + int(not audit["evidence_matches"]), lost=audit["lost"],
        duplicated=audit["duplicated"] + audit["unexpected"],
        recovery_s=None if recovery is None else round(recovery, 3),
        details={"stored_before_kill": killed_at, "evidence_matches": audit["evidence_matches"]},
    )
