"""The local feedback store the pipelines and the canary controller read (SQLite).

Each event is kept once, by :attr:`~tandem.feedback.events.FeedbackEvent.event_id`: a
replayed Kafka batch or a retried client call inserts nothing new, so the consumer can commit
its offsets after the write (at-least-once delivery) and still count every event once.
``seq`` orders events by arrival; readers resume from the last ``seq`` they saw.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from tandem.feedback.events import FeedbackEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT NOT NULL UNIQUE,
    request_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    item_id    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    position   INTEGER NOT NULL,
    ts         REAL NOT NULL,
    arm        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_request ON feedback(request_id);
"""


class FeedbackStore:
    """Feedback events in one SQLite file (WAL, so readers never block the writer)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._mu = threading.Lock()

    def add(self, events: Iterable[FeedbackEvent]) -> tuple[int, int]:
        """Insert ``events`` in one transaction; returns ``(added, duplicates)``."""
        rows = [(e.event_id, e.request_id, e.user_id, e.item_id, e.kind, e.position, e.ts, e.arm) for e in events]
        with self._mu:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO feedback(event_id, request_id, user_id, item_id, kind, position, ts, arm) "
                    "VALUES (?,?,?,?,?,?,?,?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            added = self._db.total_changes - before
        return added, len(rows) - added

    @property
    def seq(self) -> int:
        """Sequence number of the newest event (0 when empty)."""
        with self._mu:
            return int(self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM feedback").fetchone()[0])

    def events(self, since_seq: int = 0) -> Iterator[tuple[int, FeedbackEvent]]:
        """``(seq, event)`` of every event after ``since_seq``, in arrival order."""
        with self._mu:
            rows = self._db.execute(
                "SELECT seq, request_id, user_id, item_id, kind, position, ts, arm FROM feedback WHERE seq > ? "
                "ORDER BY seq", (since_seq,)).fetchall()
        for seq, *fields in rows:
            yield seq, FeedbackEvent(*fields)

    def counts(self) -> dict[str, int]:
        """Events by kind, plus ``events`` (all) and ``requests`` (distinct request ids)."""
        with self._mu:
            by_kind = dict(self._db.execute("SELECT kind, COUNT(*) FROM feedback GROUP BY kind").fetchall())
            total, requests = self._db.execute("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM feedback").fetchone()
        return {"events": int(total), "requests": int(requests), **{k: int(v) for k, v in sorted(by_kind.items())}}

    def close(self) -> None:
        """Close the database."""
        with self._mu:
            self._db.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
