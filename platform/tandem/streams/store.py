"""The catalog store: current items, tombstones, the applied-events log and snapshots (SQLite).

The store is the source of truth of the live catalog; the Lucene index is a view derived
from it. Every accepted change gets a sequence number (``seq``, strictly increasing), which
gives three things:

* **Idempotence.** ``applied`` is keyed by ``(item_id, version)``: a replayed event is a
  duplicate, and an event not newer than the stored version (item or tombstone) is stale.
  Neither changes anything.
* **Crash-safe indexing.** ``index_seq`` (in ``meta``) is the last change the index has
  durably absorbed. The applier commits the store first, then pushes changes after
  ``index_seq`` to Lucene, then advances ``index_seq``. A crash anywhere leaves
  ``index_seq`` behind or equal, and the next start re-pushes the gap; Lucene upserts and
  deletes by id are idempotent, so re-pushing is harmless. The Kafka offset is committed
  only after both, so a replayed record is either a duplicate (skipped) or not yet applied.
* **Snapshots and deltas.** A snapshot records the ``seq`` it covers; ``changes_since``
  returns what changed after it, which is what the hourly adapter pipeline trains on.

SQLite runs in WAL mode with ``synchronous=FULL`` so a committed apply survives power loss.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tandem.catalog.events import ItemEvent
from tandem.catalog.item import Item
from tandem.errors import InvalidInput, NotFound
from tandem.streams.snapshot_files import SNAPSHOT_FORMAT_VERSION, SnapshotManifest, write_items

__all__ = ["APPLY_ERROR", "SNAPSHOT_FORMAT_VERSION", "ApplyResult", "CatalogStore", "Change", "RecordFailure",
           "SnapshotManifest", "is_environmental"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    body    TEXT,
    seq     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS items_seq ON items(seq);
CREATE TABLE IF NOT EXISTS applied (
    item_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    op      TEXT NOT NULL,
    outcome TEXT NOT NULL,
    seq     INTEGER,
    at      REAL NOT NULL,
    PRIMARY KEY (item_id, version)
);
CREATE TABLE IF NOT EXISTS snapshots (
    snapshot_version INTEGER PRIMARY KEY,
    seq     INTEGER NOT NULL,
    created REAL NOT NULL,
    path    TEXT NOT NULL,
    items   INTEGER NOT NULL,
    tombstones INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

Outcome = Literal["applied", "duplicate", "stale"]


@dataclass(frozen=True)
class Change:
    """One accepted change: an upsert (with the item) or a delete, at store sequence ``seq``."""

    seq: int
    op: Literal["upsert", "delete"]
    item_id: str
    version: int
    item: Item | None = None


@dataclass(frozen=True)
class RecordFailure:
    """One event the store could not apply (its data broke a write); the rest of the batch went on.

    ``position`` is the event's index in the :meth:`CatalogStore.apply` input; ``reason`` is a
    stable code (the dead-letter ``tandem-dlq-reason``); :meth:`describe` is the detail.
    """

    position: int
    reason: str
    message: str

    def describe(self) -> str:
        """The failure in one line, for logs and the dead-letter error header."""
        return self.message


APPLY_ERROR = "apply_error"
"""Dead-letter reason of an event whose write failed in the store (:class:`RecordFailure`)."""


@dataclass
class ApplyResult:
    """What one :meth:`CatalogStore.apply` call did, per outcome."""

    applied: list[Change] = field(default_factory=list)
    duplicates: int = 0
    stale: int = 0
    failed: list[RecordFailure] = field(default_factory=list)
    """Events whose own data made their write fail; nothing of them was stored."""

    @property
    def total(self) -> int:
        """Events looked at."""
        return len(self.applied) + self.duplicates + self.stale + len(self.failed)


def is_environmental(exc: BaseException) -> bool:
    """Whether ``exc`` is a fault of the store itself (disk, lock, corruption, memory), which
    every event would meet, rather than of one event's data.

    Environmental faults abort the whole batch (the caller retries it); any other exception
    while writing one event is that event's :class:`RecordFailure`.
    """
    return (
        isinstance(exc, (sqlite3.OperationalError, sqlite3.InternalError, OSError, MemoryError))
        or type(exc) is sqlite3.DatabaseError  # "database disk image is malformed" and kin
        or not isinstance(exc, Exception)  # KeyboardInterrupt, SystemExit
    )


class CatalogStore:
    """SQLite-backed catalog store. Any number of processes may open the same file; SQLite
    serialises their write transactions (``BEGIN IMMEDIATE``) and readers never block.

    One instance per thread: its connection must not run two transactions at once.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a batch is one transaction.
        # timeout: how long a writer waits for another process's transaction (consumers of
        # one group may share a store) before failing with "database is locked".
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    # -- writes ------------------------------------------------------------------------------

    def apply(self, events: Iterable[ItemEvent]) -> ApplyResult:
        """Apply events in order in one transaction; duplicates and stale versions change nothing.

        Each event is written inside its own savepoint: when an event's data makes its write
        fail (an integer SQLite cannot hold, text it cannot encode, an event built without
        validation), that event is rolled back and reported in :attr:`ApplyResult.failed`
        and the others are applied — one bad record never stops the stream. Faults of the
        store itself (:func:`is_environmental`) roll the whole batch back and raise.
        """
        result = ApplyResult()
        now = time.time()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            seq = self._get_int("seq", 0)
            for pos, ev in enumerate(events):
                db.execute("SAVEPOINT event")
                try:
                    change = self._apply_one(ev, seq + 1, now, result)
                except Exception as exc:  # noqa: BLE001 - classified below; environmental ones re-raise
                    db.execute("ROLLBACK TO event")
                    db.execute("RELEASE event")
                    if is_environmental(exc):
                        raise
                    result.failed.append(RecordFailure(pos, APPLY_ERROR, _describe(ev, exc)))
                    continue
                db.execute("RELEASE event")
                if change is not None:
                    seq = change.seq
                    result.applied.append(change)
            self._set("seq", seq)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return result

    def _apply_one(self, ev: ItemEvent, seq: int, now: float, result: ApplyResult) -> Change | None:
        """Write one event at sequence ``seq``; ``None`` (and a count in ``result``) when it
        is a duplicate or stale."""
        db = self._db
        item_id, version, op = ev.item_id, ev.version, ev.op
        if op not in ("upsert", "delete") or (op == "upsert") != (ev.item is not None):
            raise InvalidInput(f"`op` {op!r:.40} does not match the event's body")
        if db.execute("SELECT 1 FROM applied WHERE item_id=? AND version=?", (item_id, version)).fetchone():
            result.duplicates += 1
            return None
        row = db.execute("SELECT version FROM items WHERE item_id=?", (item_id,)).fetchone()
        if row is not None and row[0] >= version:
            # Remember the stale event too, so its replay is a cheap duplicate.
            db.execute("INSERT INTO applied VALUES (?,?,?,?,NULL,?)", (item_id, version, op, "stale", now))
            result.stale += 1
            return None
        body = ev.item.model_dump_json() if ev.item is not None else None
        db.execute(
            "INSERT INTO items(item_id, version, deleted, body, seq) VALUES (?,?,?,?,?) "
            "ON CONFLICT(item_id) DO UPDATE SET version=excluded.version, deleted=excluded.deleted, "
            "body=excluded.body, seq=excluded.seq",
            (item_id, version, int(op == "delete"), body, seq),
        )
        db.execute("INSERT INTO applied VALUES (?,?,?,?,?,?)", (item_id, version, op, "applied", seq, now))
        return Change(seq, op, item_id, version, ev.item)

    def mark_indexed(self, seq: int) -> None:
        """Record that the index has durably absorbed every change up to ``seq``."""
        with self._tx():
            if seq > self._get_int("index_seq", 0):
                self._set("index_seq", seq)

    # -- reads -------------------------------------------------------------------------------

    @property
    def seq(self) -> int:
        """Sequence number of the latest accepted change (0 for an empty store)."""
        return self._get_int("seq", 0)

    @property
    def index_seq(self) -> int:
        """Sequence number of the latest change the index has absorbed."""
        return self._get_int("index_seq", 0)

    def get(self, item_id: str) -> Item | None:
        """The live item, or ``None`` when unknown or deleted."""
        row = self._db.execute("SELECT body FROM items WHERE item_id=? AND deleted=0", (item_id,)).fetchone()
        return Item.model_validate_json(row[0]) if row else None

    def versions(self) -> dict[str, tuple[int, bool]]:
        """``item_id → (version, deleted)`` for every item the store has seen."""
        return {r[0]: (r[1], bool(r[2])) for r in self._db.execute("SELECT item_id, version, deleted FROM items")}

    def items(self) -> Iterator[Item]:
        """Live items in ``item_id`` order."""
        for (body,) in self._db.execute("SELECT body FROM items WHERE deleted=0 ORDER BY item_id"):
            yield Item.model_validate_json(body)

    def counts(self) -> dict[str, int]:
        """Live items, tombstones, applied-log rows and the two sequence numbers."""
        live, dead = self._db.execute(
            "SELECT COALESCE(SUM(deleted=0),0), COALESCE(SUM(deleted=1),0) FROM items"
        ).fetchone()
        logged = self._db.execute("SELECT COUNT(*) FROM applied").fetchone()[0]
        return {"items": live, "tombstones": dead, "applied_log": logged, "seq": self.seq, "index_seq": self.index_seq}

    def changes_after(self, seq: int, limit: int | None = None) -> list[Change]:
        """Current state of every item changed after ``seq``, in ``seq`` order.

        Only the latest change per item is kept (older ones were overwritten), which is all
        an index or a pipeline needs to converge.
        """
        sql = "SELECT seq, deleted, item_id, version, body FROM items WHERE seq > ? ORDER BY seq"
        args: tuple[Any, ...] = (seq,)
        if limit is not None:
            sql += " LIMIT ?"
            args = (seq, limit)
        return [
            Change(s, "delete" if d else "upsert", i, v, Item.model_validate_json(b) if not d else None)
            for s, d, i, v, b in self._db.execute(sql, args)
        ]

    # -- snapshots ---------------------------------------------------------------------------

    def _quarantined_ids(self) -> set[str]:
        """Ids in the poisoning quarantine table, if ingest ever created it in this file."""
        exists = self._db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='quarantine'").fetchone()
        return {r[0] for r in self._db.execute("SELECT item_id FROM quarantine")} if exists else set()

    def snapshot(self, path: str | Path, fmt: Literal["jsonl", "parquet"] = "jsonl") -> SnapshotManifest:
        """Write the live catalog to folder ``path`` (items + ``manifest.json``); returns the manifest.

        The items and ``seq`` are read in one read transaction (WAL gives it a consistent
        view without blocking the writer); only numbering the snapshot takes the write lock,
        briefly, so a large snapshot does not stall ingest. Items the ingest poisoning
        detector quarantined (:class:`tandem.streams.poisoning.QuarantineLog`, a table in
        this file) are left out, so no training pipeline learns them; ``quarantined`` in the
        manifest counts them.
        """
        if fmt not in ("jsonl", "parquet"):
            raise InvalidInput(f"`fmt` must be jsonl or parquet, got {fmt!r}")
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        name = f"items.{fmt}"
        self._db.execute("BEGIN")
        try:
            seq = self.seq
            items = list(self.items())
            tombstones = self._db.execute("SELECT COUNT(*) FROM items WHERE deleted=1").fetchone()[0]
            held = self._quarantined_ids()
        finally:
            self._db.execute("COMMIT")
        quarantined = sum(item.item_id in held for item in items)
        items = [item for item in items if item.item_id not in held]
        digest = write_items(items, out / name, fmt)
        with self._tx():
            last = self._db.execute("SELECT COALESCE(MAX(snapshot_version), 0) FROM snapshots").fetchone()[0]
            manifest = SnapshotManifest(
                snapshot_version=last + 1, seq=seq, created=time.time(), items=len(items),
                tombstones=tombstones, quarantined=quarantined, format=fmt, files={name: digest},
            )  # fmt: skip
            (out / "manifest.json").write_text(manifest.model_dump_json(indent=2) + "\n")
            self._db.execute(
                "INSERT INTO snapshots VALUES (?,?,?,?,?,?)",
                (manifest.snapshot_version, seq, manifest.created, str(out.resolve()), len(items), tombstones),
            )
        return manifest

    def snapshots(self) -> list[dict[str, Any]]:
        """Every snapshot taken, oldest first."""
        cols = ("snapshot_version", "seq", "created", "path", "items", "tombstones")
        return [dict(zip(cols, r)) for r in self._db.execute(f"SELECT {', '.join(cols)} FROM snapshots ORDER BY 1")]

    def changes_since(self, snapshot_version: int) -> list[Change]:
        """Items upserted or deleted after snapshot ``snapshot_version`` (0 = since the start)."""
        if snapshot_version == 0:
            return self.changes_after(0)
        row = self._db.execute("SELECT seq FROM snapshots WHERE snapshot_version=?", (snapshot_version,)).fetchone()
        if row is None:
            raise NotFound(f"`snapshot_version` {snapshot_version} is not a snapshot of {self.path}")
        return self.changes_after(row[0])

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    def __enter__(self) -> CatalogStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------------------------

    def _get_int(self, key: str, default: int) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else default

    def _set(self, key: str, value: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")


def _describe(ev: Any, exc: BaseException) -> str:
    """``<item_id> v<version>: <ExceptionType>: <message>``, each part bounded for a header."""
    item_id = getattr(ev, "item_id", None)
    return f"{item_id!r:.80} v{getattr(ev, 'version', None)!r:.30}: {type(exc).__name__}: {str(exc)[:300]}"
