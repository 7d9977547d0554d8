"""Catalog store and applier: idempotence, out-of-order versions, tombstones, crash-safe
index sync, snapshots and deltas."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pytest

from tandem.catalog.events import ItemEvent
from tandem.catalog.item import Item
from tandem.errors import NotFound
from tandem.streams.apply import Applier
from tandem.streams.store import CatalogStore


class DictIndex:
    """An in-memory :class:`~tandem.streams.apply.LiveIndex` that can crash on demand.

    Lucene itself is exercised by the integration tests; here only the applier's ordering
    and bookkeeping are under test.
    """

    def __init__(self) -> None:
        self.docs: dict[str, Item] = {}
        self.calls = 0
        self.fail_next = False

    def upsert(self, items: Iterable[Item]) -> int:
        self._maybe_crash()
        items = list(items)
        self.docs.update({i.item_id: i for i in items})
        return len(items)

    def delete(self, item_ids: Iterable[str]) -> int:
        self._maybe_crash()
        ids = list(item_ids)
        for i in ids:
            self.docs.pop(i, None)
        return len(ids)

    def _maybe_crash(self) -> None:
        self.calls += 1
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("index crashed")


def up(item_id: str, version: int, title: str | None = None) -> ItemEvent:
    return ItemEvent.upsert(Item(item_id=item_id, title=title or f"{item_id} v{version}"), version)


def test_replays_and_older_versions_change_nothing(tmp_path: Path) -> None:
    with CatalogStore(tmp_path / "c.sqlite") as store:
        first = store.apply([up("a", 1), up("b", 1), up("a", 3)])
        assert len(first.applied) == 3
        seq = store.seq
        again = store.apply([up("a", 1), up("b", 1), up("a", 3), up("a", 2, "older")])
        assert (len(again.applied), again.duplicates, again.stale) == (0, 3, 1)
        assert store.seq == seq
        item = store.get("a")
        assert item is not None and (item.version, item.title) == (3, "a v3")
        # The stale event is logged too, so its own replay is a duplicate.
        assert store.apply([up("a", 2, "older")]).duplicates == 1


def test_delete_is_a_tombstone_that_beats_older_upserts(tmp_path: Path) -> None:
    with CatalogStore(tmp_path / "c.sqlite") as store:
        store.apply([up("a", 1), ItemEvent.delete("a", 2)])
        assert store.get("a") is None
        late = store.apply([up("a", 1, "late replay")])
        assert late.duplicates == 1 and store.get("a") is None
        assert store.apply([up("a", 0)]).stale == 1
        assert store.get("a") is None
        assert store.versions()["a"] == (2, True)
        store.apply([up("a", 5, "back")])
        item = store.get("a")
        assert item is not None and item.title == "back"
        assert store.counts()["items"] == 1 and store.counts()["tombstones"] == 0


def test_state_survives_reopening(tmp_path: Path) -> None:
    with CatalogStore(tmp_path / "c.sqlite") as store:
        store.apply([up("a", 1), up("b", 2)])
    with CatalogStore(tmp_path / "c.sqlite") as store:
        assert [i.item_id for i in store.items()] == ["a", "b"]
        assert store.apply([up("b", 2)]).duplicates == 1


def test_applier_keeps_index_equal_to_store(tmp_path: Path) -> None:
    index = DictIndex()
    with CatalogStore(tmp_path / "c.sqlite") as store:
        applier = Applier(store, index)
        report = applier.apply([up("a", 1), up("b", 1), ItemEvent.delete("b", 2), up("c", 1), up("a", 2)])
        assert (report.applied, report.indexed) == (5, 3)  # b's upsert and delete collapse
        assert {k: v.version for k, v in index.docs.items()} == {"a": 2, "c": 1}
        assert store.index_seq == store.seq
        calls = index.calls
        assert applier.apply([up("a", 2), up("a", 1)]).indexed == 0
        assert index.calls == calls  # nothing new: the index is not touched


def test_crash_between_store_and_index_is_repaired_on_restart(tmp_path: Path) -> None:
    index = DictIndex()
    path = tmp_path / "c.sqlite"
    with CatalogStore(path) as store:
        applier = Applier(store, index)
        applier.apply([up("a", 1)])
        index.fail_next = True
        with pytest.raises(RuntimeError):
            applier.apply([up("b", 1), up("a", 2)])
        # The store committed, the index did not: the gap is recorded, not lost.
        assert store.seq > store.index_seq
        assert "b" not in index.docs
    with CatalogStore(path) as store:
        Applier(store, index)  # a restart catches the index up before consuming
        assert {k: v.version for k, v in index.docs.items()} == {"a": 2, "b": 1}
        assert store.index_seq == store.seq
        # The source replays the batch whose offset was never committed: all duplicates.
        assert Applier(store, index).apply([up("b", 1), up("a", 2)]).applied == 0


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_snapshots_and_changes_since(tmp_path: Path, fmt: str) -> None:
    with CatalogStore(tmp_path / "c.sqlite") as store:
        store.apply([up("a", 1), up("b", 1), up("c", 1), ItemEvent.delete("c", 2)])
        m1 = store.snapshot(tmp_path / "s1", fmt=fmt)  # type: ignore[arg-type]
        assert (m1.snapshot_version, m1.items, m1.tombstones, m1.format) == (1, 2, 1, fmt)
        manifest = json.loads((tmp_path / "s1" / "manifest.json").read_text())
        assert manifest["seq"] == store.seq and f"items.{fmt}" in manifest["files"]
        if fmt == "jsonl":
            rows = [json.loads(line) for line in (tmp_path / "s1" / "items.jsonl").read_text().splitlines()]
            assert [r["item_id"] for r in rows] == ["a", "b"]
        else:
            import pyarrow.parquet as pq

            assert pq.read_table(tmp_path / "s1" / "items.parquet").column("item_id").to_pylist() == ["a", "b"]
        store.apply([up("d", 1), up("a", 2), ItemEvent.delete("b", 3), up("a", 1)])
        delta = store.changes_since(1)
        assert [(c.op, c.item_id, c.version) for c in delta] == [("upsert", "d", 1), ("upsert", "a", 2), ("delete", "b", 3)]
        assert store.snapshot(tmp_path / "s2").snapshot_version == 2
        assert store.changes_since(2) == []
        assert len(store.changes_since(0)) == 4  # a, b, c, d: latest state of each
        with pytest.raises(NotFound, match="`snapshot_version`"):
            store.changes_since(9)


def test_snapshot_leaves_quarantined_items_out(tmp_path: Path) -> None:
    from tandem.streams.poisoning import PoisoningDetector, QuarantineLog

    store = CatalogStore(tmp_path / "c.sqlite")
    clean = Item(item_id="a", title="Cordless Drill 20V Kit")
    stuffed = Item(item_id="b", title="drill drill drill drill drill drill drill saw saw saw saw")
    store.apply([ItemEvent.upsert(it, version=1) for it in (clean, stuffed)])
    verdict = PoisoningDetector().inspect(stuffed)
    assert verdict.flagged
    QuarantineLog(store.path).add(stuffed, verdict)
    manifest = store.snapshot(tmp_path / "snap")
    written = [json.loads(line)["item_id"] for line in (tmp_path / "snap" / "items.jsonl").read_text().splitlines()]
    assert written == ["a"] and manifest.items == 1 and manifest.quarantined == 1
