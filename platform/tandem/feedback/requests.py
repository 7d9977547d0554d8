"""The request log (issue 22 item 3): what each answered search was, so feedback can be joined
to its query.

Feedback events name a ``request_id`` but carry no query text; the gateway knows both. With
``--feedback-kafka`` it also publishes one record per answered search to ``tandem.requests``
(``{request_id, user_id, query, item_ids, ts}``, key = request id; bounded, never-blocking:
:class:`tandem_services.learning.RequestLogEmitter`). :func:`request_log_consumer` keeps the
most recent ``max_rows`` in a SQLite :class:`RequestLog` (oldest dropped), and
:func:`behaviour_events` joins it with feedback into the ``{qid: {item: {"click",
"purchase"}}}`` labels ``tandem fusion train`` weighs with λ per task: a query text that is
one of the training queries takes its qid, any other gets ``fb-<digest>`` and joins the
training queries with behaviour labels only.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.catalog.events import EventError
from tandem.feedback.events import MAX_ID_CHARS, FeedbackEvent
from tandem.streams.apply import BatchReport
from tandem.streams.config import StreamSettings

REQUESTS_TOPIC = "tandem.requests"
REQUESTS_GROUP = "tandem-request-log"
MAX_QUERY_CHARS = 1024
MAX_ITEMS = 1000


class RequestRecordError(EventError):
    """A malformed request-log record; the message names the field."""

    def __init__(self, message: str) -> None:  # noqa: D107
        super().__init__("invalid_field", message)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One answered search: its id, user, query text and the item ids it returned, in order."""

    request_id: str
    user_id: str
    query: str
    item_ids: tuple[str, ...]
    ts: float


def encode_request(r: RequestRecord) -> tuple[bytes, bytes]:
    """Kafka key (``request_id``) and JSON value of ``r``."""
    body = {"request_id": r.request_id, "user_id": r.user_id, "query": r.query, "item_ids": list(r.item_ids),
            "ts": r.ts}
    return r.request_id.encode("utf-8"), json.dumps(body, separators=(",", ":")).encode("utf-8")


def decode_request(key: bytes | str | None, value: bytes | str | None) -> RequestRecord:
    """Decode and validate one ``tandem.requests`` record; :class:`RequestRecordError` naming the field."""
    del key
    try:
        d = json.loads(value) if value is not None else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRecordError(f"the value is not JSON: {exc}"[:300]) from None
    if not isinstance(d, dict):
        raise RequestRecordError("the value must be a JSON object")
    for name, limit in (("request_id", MAX_ID_CHARS), ("user_id", MAX_ID_CHARS), ("query", MAX_QUERY_CHARS)):
        v = d.get(name, "")
        if not isinstance(v, str) or len(v) > limit or (name != "user_id" and not v.strip()):
            raise RequestRecordError(f"`{name}` must be a non-empty string of at most {limit} characters"
                                     if name != "user_id" else f"`user_id` must be a string of at most {limit}")
    items, ts = d.get("item_ids"), d.get("ts")
    if not isinstance(items, list) or len(items) > MAX_ITEMS or not all(isinstance(i, str) and i for i in items):
        raise RequestRecordError(f"`item_ids` must be a list of at most {MAX_ITEMS} item ids")
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts) or ts <= 0:
        raise RequestRecordError("`ts` must be seconds since the epoch")
    return RequestRecord(d["request_id"], d.get("user_id", ""), d["query"], tuple(items), float(ts))


class RequestLogPublisher:
    """Sends request records to ``tandem.requests``."""

    def __init__(self, settings: StreamSettings | None = None, topic: str = REQUESTS_TOPIC) -> None:
        from tandem.streams.producer import EventProducer

        self._producer = EventProducer(settings or StreamSettings(), topic=topic, client_id="tandem-request-log",
                                       max_block_ms=2000)

    def send(self, records: Sequence[RequestRecord], *, wait: bool = False) -> None:
        """Queue ``records`` (``wait``: until acknowledged)."""
        for r in records:
            self._producer.send_raw(*encode_request(r))
        if wait:
            self._producer.flush(30.0)

    def close(self) -> None:
        """Flush and close."""
        self._producer.close()


class RequestLog:
    """The most recent ``max_rows`` requests in SQLite (a replayed record changes nothing)."""

    def __init__(self, path: str | Path, max_rows: int = 1_000_000) -> None:
        if max_rows < 1:
            raise ValueError(f"`max_rows` must be >= 1, got {max_rows}")
        self.path, self.max_rows = Path(path), max_rows
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS requests (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "request_id TEXT UNIQUE, user_id TEXT, query TEXT, item_ids TEXT, ts REAL)")
        self._mu = threading.Lock()
        self.seq = self._count()

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM requests").fetchone()[0])

    def add(self, records: Iterable[RequestRecord]) -> int:
        """Store ``records``; returns how many were new. Trims to ``max_rows``."""
        with self._mu, self._db:
            before = self._db.total_changes
            self._db.executemany("INSERT OR IGNORE INTO requests (request_id, user_id, query, item_ids, ts) "
                                 "VALUES (?, ?, ?, ?, ?)",
                                 [(r.request_id, r.user_id, r.query, json.dumps(list(r.item_ids)), r.ts)
                                  for r in records])
            added = self._db.total_changes - before
            self._db.execute("DELETE FROM requests WHERE seq <= (SELECT MAX(seq) FROM requests) - ?", (self.max_rows,))
            self.seq += added
        return added

    def get(self, request_ids: Iterable[str]) -> dict[str, RequestRecord]:
        """The stored records of ``request_ids`` (unknown ones left out)."""
        ids = list(dict.fromkeys(request_ids))
        out: dict[str, RequestRecord] = {}
        with self._mu:
            for s in range(0, len(ids), 500):
                chunk = ids[s:s + 500]
                rows = self._db.execute("SELECT request_id, user_id, query, item_ids, ts FROM requests WHERE "
                                        f"request_id IN ({','.join('?' * len(chunk))})", chunk).fetchall()
                out |= {r[0]: RequestRecord(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4]) for r in rows}
        return out

    def __len__(self) -> int:
        with self._mu:
            return self._count()

    def close(self) -> None:
        """Close the database."""
        self._db.close()


class RequestLogApplier:
    """Ingest-consumer applier writing records into a :class:`RequestLog`."""

    def __init__(self, log: RequestLog) -> None:
        self.store = log

    def apply(self, records: Sequence[RequestRecord]) -> BatchReport:
        """Store a batch; a :class:`BatchReport` in the consumer's terms."""
        started = time.perf_counter()
        added = self.store.add(records)
        return BatchReport(events=len(records), applied=added, duplicates=len(records) - added, stale=0, indexed=0,
                           seconds=time.perf_counter() - started)


def request_log_consumer(log: RequestLog, settings: StreamSettings | None = None, *, group: str = REQUESTS_GROUP,
                         max_batch: int = 500, **overrides: Any) -> Any:
    """An :class:`~tandem.streams.consumer.IngestConsumer` keeping ``tandem.requests`` in ``log``."""
    from tandem.streams.consumer import IngestConsumer

    settings = settings or StreamSettings()
    return IngestConsumer(RequestLogApplier(log), settings, group=group, topic=REQUESTS_TOPIC,  # type: ignore[arg-type]
                          dlq_topic=f"{REQUESTS_TOPIC}.dlq", max_batch=max_batch, decode=decode_request, **overrides)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def behaviour_events(log: RequestLog, feedback: Iterable[FeedbackEvent], queries: Mapping[str, str]
                     ) -> tuple[dict[str, dict[str, set[str]]], dict[str, str]]:
    """Clicks and purchases joined to their request's query (module docstring): the events by qid
    and the queries not in ``queries`` (``fb-<digest>`` → text). Feedback whose request the log
    no longer holds is left out."""
    acts = [e for e in feedback if e.kind in ("click", "purchase")]
    requests = log.get(e.request_id for e in acts)
    qid_of = {_norm(t): q for q, t in queries.items()}
    events: dict[str, dict[str, set[str]]] = {}
    extra: dict[str, str] = {}
    for e in acts:
        r = requests.get(e.request_id)
        if r is None:
            continue
        key = _norm(r.query)
        qid = qid_of.get(key)
        if qid is None:
            qid = "fb-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:12]
            extra.setdefault(qid, r.query)
        events.setdefault(qid, {}).setdefault(e.item_id, set()).add(e.kind)
    return events, extra


__all__ = ["REQUESTS_TOPIC", "RequestLog", "RequestLogPublisher", "RequestRecord", "behaviour_events",
           "decode_request", "encode_request", "request_log_consumer"]
