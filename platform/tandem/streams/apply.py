"""Apply item events to the catalog store and the live BM25 index, crash-safely.

The one code path shared by the Kafka consumer and the JSONL file source. Order per batch:

1. ``store.apply(events)`` — one SQLite transaction; duplicates and stale versions drop out.
2. ``sync_index()`` — push every store change after ``index_seq`` to Lucene (upserts and
   deletes by id, each call durable when it returns), then advance ``index_seq``.

The document-poisoning policy (:mod:`tandem.streams.poisoning`) sits on both steps: with
action ``dlq`` flagged upserts are refused before step 1 (returned in
:attr:`BatchReport.refused` for the caller to dead-letter); with ``flag`` the index gets a
neutralised copy in step 2; with ``quarantine`` the item is stored but kept out of the index.
Every indexed item is capped at the policy's ``term_cap`` occurrences per term and field.

An event whose store write fails on its own data (:class:`~tandem.streams.store.RecordFailure`,
reason ``apply_error``) is refused the same way, whatever the policy, so one bad record never
stops the stream.

The caller commits its source position (Kafka offset) only after ``apply`` returns. See
:mod:`tandem.streams.store` for why every crash point converges on restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from tandem.catalog.events import ItemEvent
from tandem.catalog.item import Item
from tandem.sparse.documents import cap_item
from tandem.streams.poisoning import PoisoningDetector, PoisoningPolicy, QuarantineLog, Verdict, count_flag
from tandem.streams.store import ApplyResult, CatalogStore

if TYPE_CHECKING:
    from tandem.sparse import SparseRetriever

log = logging.getLogger(__name__)

SYNC_BATCH = 2000
"""Changes pushed to the index per Lucene commit while catching up."""


@runtime_checkable
class Refusal(Protocol):
    """Why one event of a batch was refused: a poisoning :class:`Verdict` or a store
    :class:`~tandem.streams.store.RecordFailure`. The caller dead-letters the event with it."""

    @property
    def reason(self) -> str:
        """Stable code: the dead-letter ``tandem-dlq-reason`` header and a metrics label."""
        ...

    def describe(self) -> str:
        """One line of detail: the dead-letter ``tandem-dlq-error`` header."""
        ...


class LiveIndex(Protocol):
    """What the applier needs from a search index: idempotent upsert/delete by ``item_id``.

    :class:`tandem.sparse.SparseRetriever` satisfies it; so does any index whose updates
    are durable when the call returns.
    """

    def upsert(self, items: Iterable[Item]) -> int:
        """Add or replace items by id; durable and searchable on return."""
        ...

    def delete(self, item_ids: Iterable[str]) -> int:
        """Remove items by id (unknown ids ignored); durable and searchable on return."""
        ...


class LazyBM25Index:
    """The live BM25 index at ``index_dir``, built from the first upserts when absent.

    Tandem's Lucene index is created by a bulk build (``tandem index build``) and needs at
    least one document, so an ingest that starts from nothing builds it from its first batch
    of upserts and opens it for live updates from then on.
    """

    def __init__(self, index_dir: str | Path) -> None:
        self.index_dir = Path(index_dir)
        self._retriever: SparseRetriever | None = None

    def _open(self):  # lazy: pyserini starts the JVM
        from tandem.sparse import SparseRetriever

        if self._retriever is None:
            self._retriever = SparseRetriever(self.index_dir)
        return self._retriever

    @property
    def exists(self) -> bool:
        """Whether an index has been built at ``index_dir``."""
        from tandem.sparse.config import META_FILE

        return (self.index_dir / META_FILE).is_file()

    def upsert(self, items: Iterable[Item]) -> int:
        """Upsert, building the index from ``items`` when there is none yet."""
        items = list(items)
        if not items:
            return 0
        if self._retriever is None and not self.exists:
            from tandem.sparse import build_index

            # Deduplicate by id, keeping the last (build_index refuses duplicates).
            latest = {i.item_id: i for i in items}
            build_index(list(latest.values()), self.index_dir)
            self._open()
            return len(latest)
        return int(self._open().upsert(items))

    def delete(self, item_ids: Iterable[str]) -> int:
        """Delete by id; a no-op while there is no index (nothing to delete from)."""
        ids = list(item_ids)
        if not ids or (self._retriever is None and not self.exists):
            return 0
        return int(self._open().delete(ids))

    @property
    def retriever(self):
        """The open :class:`~tandem.sparse.SparseRetriever` (opening it when needed)."""
        return self._open()

    def close(self) -> None:
        """Close the retriever (releases Lucene's write lock)."""
        if self._retriever is not None:
            self._retriever.close()
            self._retriever = None


@dataclass
class BatchReport:
    """Outcome of one :meth:`Applier.apply` call."""

    events: int
    applied: int
    duplicates: int
    stale: int
    indexed: int
    seconds: float
    refused: list[tuple[int, Refusal]] = field(default_factory=list)
    """``(position in the batch, why)`` of each refused event, in batch order: flagged upserts
    with poisoning action ``dlq`` and events whose store write failed (``apply_error``)."""
    quarantined: int = 0
    """Items kept out of the index by the ``quarantine`` action in this batch."""


class Applier:
    """Applies event batches to a :class:`CatalogStore` and (optionally) a :class:`LiveIndex`.

    ``policy`` defaults to the ``TANDEM_POISONING_*`` settings (:class:`StreamSettings`),
    i.e. action ``quarantine`` with a per-field term cap of 3.
    """

    def __init__(self, store: CatalogStore, index: LiveIndex | None = None,
                 policy: PoisoningPolicy | None = None) -> None:
        if policy is None:
            from tandem.streams.config import StreamSettings

            policy = StreamSettings().poisoning_policy()
        self.store = store
        self.index = index
        self.policy = policy
        self.detector = PoisoningDetector(policy)
        self.quarantine = QuarantineLog(store.path) if policy.action == "quarantine" else None
        self._quarantined = 0
        # Catch up first: a previous run may have crashed between the store and the index.
        caught_up = self.sync_index()
        if caught_up:
            log.info("index caught up on %d changes left by an earlier run", caught_up)

    def screen(self, events: Sequence[ItemEvent]) -> tuple[list[ItemEvent], list[tuple[int, Verdict]]]:
        """Split ``events`` into accepted ones and flagged upserts, when the action is ``dlq``.

        Other actions accept everything here (they act at indexing time).
        """
        if self.policy.action != "dlq":
            return list(events), []
        accepted: list[ItemEvent] = []
        refused: list[tuple[int, Verdict]] = []
        for pos, ev in enumerate(events):
            verdict = self.detector.inspect(ev.item) if ev.op == "upsert" and ev.item is not None else None
            if verdict is not None and verdict.flagged:
                count_flag(verdict, "dlq")
                refused.append((pos, verdict))
            else:
                accepted.append(ev)
        return accepted, refused

    def apply(self, events: Sequence[ItemEvent]) -> BatchReport:
        """Screen ``events``, apply them (in order) to the store, then bring the index up to date."""
        t0 = time.perf_counter()
        accepted, screened = self.screen(events)
        result: ApplyResult = self.store.apply(accepted)
        refused: list[tuple[int, Refusal]] = list(screened)
        if result.failed:
            # store positions index `accepted`; map them back to the batch
            out = {pos for pos, _ in screened}
            batch_pos = [pos for pos in range(len(events)) if pos not in out]
            for failure in result.failed:
                log.warning("apply failed for one event, dead-lettered: %s", failure.message)
                refused.append((batch_pos[failure.position], failure))
            refused.sort(key=lambda pair: pair[0])
        self._quarantined = 0
        indexed = self.sync_index()
        return BatchReport(
            events=len(accepted) - len(result.failed), applied=len(result.applied), duplicates=result.duplicates,
            stale=result.stale, indexed=indexed, seconds=time.perf_counter() - t0, refused=refused,
            quarantined=self._quarantined,
        )  # fmt: skip

    def _for_index(self, item: Item) -> Item | None:
        """What the index gets for ``item`` under the policy; ``None`` = keep it out (quarantine)."""
        verdict = self.detector.inspect(item)
        if not verdict.flagged:
            return cap_item(item, self.policy.term_cap)
        action = self.policy.action
        count_flag(verdict, action)
        log.warning("poisoning: %s v%d flagged (%s); action %s", item.item_id, item.version, verdict.describe(), action)
        if action == "quarantine" and self.quarantine is not None:
            self.quarantine.add(item, verdict)
            self._quarantined += 1
            return None
        # `flag`, and `dlq` for events that bypassed screen() (stored before the policy changed).
        return self.detector.neutralise(item, verdict)

    def sync_index(self) -> int:
        """Push store changes the index has not absorbed; returns how many were pushed."""
        if self.index is None:
            return 0
        pushed = 0
        while True:
            changes = self.store.changes_after(self.store.index_seq, limit=SYNC_BATCH)
            if not changes:
                return pushed
            upserts: list[Item] = []
            deletes = [c.item_id for c in changes if c.op == "delete"]
            for c in changes:
                if c.op == "upsert" and c.item is not None:
                    shown = self._for_index(c.item)
                    if shown is None:
                        deletes.append(c.item_id)  # an earlier, clean version may be indexed
                    else:
                        upserts.append(shown)
            if self.quarantine is not None:
                self.quarantine.release([i.item_id for i in upserts] + [c.item_id for c in changes if c.op == "delete"])
            # One item appears at most once in `changes` (the store keeps its latest state),
            # so upserts and deletes never touch the same id and their order does not matter.
            if upserts:
                self.index.upsert(upserts)
            if deletes:
                self.index.delete(deletes)
            self.store.mark_indexed(changes[-1].seq)
            pushed += len(changes)
