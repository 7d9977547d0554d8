"""The document-poisoning detector and the applier's actions (flag, quarantine, dlq) on fixture items."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from tandem.catalog.events import ItemEvent
from tandem.catalog.item import Item
from tandem.streams.apply import Applier
from tandem.streams.config import StreamSettings
from tandem.streams.consumer import ingest_file
from tandem.streams.poisoning import PoisoningDetector, PoisoningPolicy
from tandem.streams.store import CatalogStore
from tandem_testing.stream_catalog import synthetic_items
from tandem_testing.tiny_catalog import tiny_catalog

# Real-looking titles from the home-improvement domain, including the hard cases: sizes and
# units repeated ("in.", "x"), a noun legitimately three times, long spec-like titles.
CLEAN_TITLES = [
    "Sharkbite 3/4 in. x 1/2 in. x 1/2 in. Brass Barb x Barb x Barb Reducer Tee",
    "Sunjoy Calais 8 ft. x 5 ft. x 8 ft. Steel Tile Fabric Grill Gazebo",
    "Foremost Naples 25 in. W x 22 in. D x 34 in. H Vanity in Warm Cinnamon with Granite Vanity Top in Beige",
    "Pro-Lift Z-Creeper 2-in-1 Creeper and Creeper Seat",
    ("Starlight Hot Tubs Northern Star 6-Person 45-Jet Lounge Spa with Bluetooth Sound System, Waterfall, "
     "Colored LED Cabinet/Jet Mood Lighting"),
    "Toro Personal Pace Recycler 22 in. Variable Speed Self-Propelled Gas Lawn Mower with Briggs & Stratton Engine",
]
CLEAN_DESCRIPTIONS = [
    ("This cordless drill has a brushless motor that delivers more power and a longer run time than brushed "
     "models, and the two-speed gearbox lets you switch between driving screws and drilling holes."),
    "Includes drill, charger, two batteries and a contractor bag. Compatible with all 20V tools from the brand.",
]
TARGET = "outdoor patio heater"
STUFFED = [
    Item(item_id="s1", title="Patio Heater Patio Heater Patio Heater Patio Heater Outdoor Gas"),
    Item(item_id="s2", title="Claw Hammer 16 oz", description="A solid hammer for framing work. " + " ".join(
        ["patio heater outdoor propane gazebo grill lawn mower trimmer sprinkler hose faucet vanity toilet"])),
    Item(item_id="s3", title="Claw Hammer", description=" ".join(["heater"] * 12) + " is what this is."),
    Item(item_id="s4", title="Kitchen Faucet", attributes={"keywords": "heater heater heater heater heater"}),
    Item(item_id="s5", title="LED Bulb " + " ".join(f"kw{i}" for i in range(30))),
]


def _flagged(items: Iterable[Item], policy: PoisoningPolicy | None = None) -> list[str]:
    d = PoisoningDetector(policy)
    return [i.item_id for i in items if d.inspect(i).flagged]


def test_clean_items_are_not_flagged() -> None:
    clean = [Item(item_id=f"c{n}", title=t) for n, t in enumerate(CLEAN_TITLES)]
    clean += [Item(item_id=f"d{n}", title="Cordless Drill 20V", description=d) for n, d in enumerate(CLEAN_DESCRIPTIONS)]
    assert _flagged([*clean, *tiny_catalog(), *synthetic_items(300)]) == []


def test_stuffed_items_are_flagged_with_the_rule_that_fired() -> None:
    d = PoisoningDetector()
    rules = {i.item_id: d.inspect(i).rules for i in STUFFED}
    assert rules["s1"] == ["repetition"]
    assert rules["s2"] == ["keyword_list"]
    assert "repetition" in rules["s3"]
    assert rules["s4"] == ["repetition"]
    assert rules["s5"] == ["keyword_list"]
    assert d.inspect(STUFFED[0]).reason == "poisoning:repetition"


def test_thresholds_are_configurable() -> None:
    lenient = PoisoningPolicy(max_term_count={"title": 10}, max_term_share=0.5, max_title_terms=40)
    assert "s1" not in _flagged(STUFFED, lenient) and "s5" not in _flagged(STUFFED, lenient)
    strict = PoisoningPolicy(max_term_count={"title": 1})
    assert "c0" in _flagged([Item(item_id="c0", title="Creeper and Creeper Seat")], strict)
    assert _flagged(STUFFED, PoisoningPolicy(action="off")) == []


def test_neutralise_removes_the_hidden_list_and_caps_repeats() -> None:
    d = PoisoningDetector()
    shown = d.neutralise(STUFFED[1])
    assert "gazebo" not in shown.description and shown.description.startswith("A solid hammer")
    assert d.neutralise(STUFFED[0]).title == "Patio Heater Outdoor Gas"  # a flagged field keeps one of each term
    clean_long = Item(item_id="c", title="Hose", description="hose " * 3 + "for hose reels")
    assert d.neutralise(clean_long).description.split().count("hose") == 3  # unflagged: the usual cap
    assert STUFFED[1].description.endswith("toilet")  # the input is not modified


class RecordingIndex:
    """A LiveIndex that remembers what it was given (the applier's contract is upsert/delete)."""

    def __init__(self) -> None:
        self.docs: dict[str, Item] = {}

    def upsert(self, items: Iterable[Item]) -> int:
        items = list(items)
        self.docs.update({i.item_id: i for i in items})
        return len(items)

    def delete(self, item_ids: Iterable[str]) -> int:
        ids = [i for i in item_ids if i in self.docs]
        for i in ids:
            del self.docs[i]
        return len(ids)


def _metric(rule: str, action: str) -> float:
    return REGISTRY.get_sample_value("tandem_ingest_poisoning_flagged_total", {"rule": rule, "action": action}) or 0.0


def _events(version: int = 1) -> list[ItemEvent]:
    return [ItemEvent.upsert(i.model_copy(update={"version": version}), version)
            for i in [*tiny_catalog()[:3], STUFFED[0], STUFFED[1]]]


def test_flag_action_indexes_a_neutralised_copy_and_counts_it(tmp_path: Path) -> None:
    before = _metric("repetition", "flag")
    with CatalogStore(tmp_path / "c.sqlite") as store:
        index = RecordingIndex()
        report = Applier(store, index, PoisoningPolicy(action="flag")).apply(_events())
        assert report.applied == 5 and not report.refused
        assert store.get("s1").title == STUFFED[0].title  # the catalog keeps what the seller sent
    assert index.docs["s1"].title == "Patio Heater Outdoor Gas"
    assert "gazebo" not in index.docs["s2"].description
    assert index.docs["t01"] == tiny_catalog()[0].model_copy(update={"version": 1})
    assert _metric("repetition", "flag") == before + 1


def test_quarantine_stores_but_does_not_index_until_a_clean_version(tmp_path: Path) -> None:
    with CatalogStore(tmp_path / "c.sqlite") as store:
        index = RecordingIndex()
        applier = Applier(store, index, PoisoningPolicy(action="quarantine"))
        assert applier.apply(_events()).quarantined == 2
        assert set(index.docs) == {"t01", "t02", "t03"} and store.get("s1") is not None
        assert {k: v[1] for k, v in applier.quarantine.entries().items()} == {
            "s1": "poisoning:repetition", "s2": "poisoning:keyword_list"}
        clean = Item(item_id="s1", title="Outdoor Patio Heater Propane", version=2)
        applier.apply([ItemEvent.upsert(clean, 2)])
        assert index.docs["s1"].title == clean.title and "s1" not in applier.quarantine.entries()
        # A quarantined new version removes the clean older one from the index.
        applier.apply([ItemEvent.upsert(STUFFED[0].model_copy(update={"version": 3}), 3)])
        assert "s1" not in index.docs and "s1" in applier.quarantine.entries()


def test_dlq_refuses_flagged_events_before_the_store(tmp_path: Path) -> None:
    before = _metric("keyword_list", "dlq")
    with CatalogStore(tmp_path / "c.sqlite") as store:
        report = Applier(store, RecordingIndex(), PoisoningPolicy(action="dlq")).apply(_events())
        assert [(p, v.reason) for p, v in report.refused] == [(3, "poisoning:repetition"), (4, "poisoning:keyword_list")]
        assert report.applied == 3 and store.get("s1") is None
    assert _metric("keyword_list", "dlq") == before + 1


def test_file_source_writes_poisoning_rejects(tmp_path: Path) -> None:
    from tandem.catalog.events import encode_event

    src, rejects = tmp_path / "events.jsonl", tmp_path / "rejects.jsonl"
    src.write_text("".join(encode_event(e)[1].decode() + "\n" for e in _events()))
    with CatalogStore(tmp_path / "c.sqlite") as store:
        totals = ingest_file(src, Applier(store, None, PoisoningPolicy(action="dlq")), rejects=rejects)
    assert totals.applied == 3 and totals.reasons == {"poisoning:repetition": 1, "poisoning:keyword_list": 1}
    assert '"line": 4' in rejects.read_text()


def test_default_action_is_quarantine_with_a_cap_of_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TANDEM_POISONING_ACTION", raising=False)
    monkeypatch.delenv("TANDEM_POISONING_TERM_CAP", raising=False)
    assert StreamSettings().poisoning_policy() == PoisoningPolicy() == PoisoningPolicy(action="quarantine", term_cap=3)


def test_settings_choose_the_action(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TANDEM_POISONING_ACTION", "dlq")
    monkeypatch.setenv("TANDEM_POISONING_TERM_CAP", "2")
    policy = StreamSettings().poisoning_policy()
    assert policy.action == "dlq" and policy.term_cap == 2
    with CatalogStore(tmp_path / "c.sqlite") as store:
        assert Applier(store).policy == policy
    monkeypatch.setenv("TANDEM_POISONING_ACTION", "delete-everything")
    with pytest.raises(ValueError, match="poisoning_action"):
        StreamSettings()
