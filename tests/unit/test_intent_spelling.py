"""Spelling correction against catalog words (:mod:`tandem.intent.spelling`) and the
decomposer's ``spelled`` sub-query: what is corrected, what is left alone, what old files do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tandem.errors import CorruptArtifact
from tandem.intent import CatalogIntentDecomposer
from tandem.intent.spelling import Speller, one_edit

TITLES = [
    "Leviton 15 Amp GFCI Outlet in White", "Leviton 20 Amp GFCI Duplex Outlet", "Hampton Bay GFCI Wall Plate",
    "Hampton Bay Patio Heater", "Hampton Bay Patio Umbrella", "JELD-WEN Entry Door", "JELD-WEN Patio Door",
    "Everbilt Pruner Blade", "Everbilt Pruner Blade Set", "Fiskars Pruner", "Heater Fan 1500-Watt", "Fan Heater",
    "Steel Wall Plate Cover", "Steel Plate Cover", "Wall Plate Cover in Ivory", "Zaxby Bracket",
]


@pytest.mark.parametrize(("a", "b", "want"), [
    ("gcfi", "gfci", True), ("padtio", "patio", True), ("patio", "patio", False), ("heatr", "heater", True),
    ("hetear", "heater", False), ("patio", "ratios", False), ("door", "floor", False),
])
def test_one_edit_is_insertion_deletion_substitution_or_adjacent_swap(a: str, b: str, want: bool) -> None:
    assert one_edit(a, b) is want and one_edit(b, a) is want


def test_unknown_words_are_corrected_to_the_most_frequent_catalog_word_one_edit_away() -> None:
    s = Speller.fit(TITLES)
    assert s.correct("Metal Plate Cover GCFI") == "metal plate cover gfci"
    assert s.correct("padtio heatr") == "patio heater"
    assert s.correct("hetear") == "hetear"  # two edits away: kept as typed


def test_known_words_short_words_codes_and_one_off_targets_are_left_alone() -> None:
    s = Speller.fit(TITLES)
    assert s.correct("pruners") == "pruners"  # the catalog has "pruner": a plural, not a typo
    assert s.correct("jeld wen door") == "jeld wen door"  # parts of JELD-WEN are catalog words
    assert s.correct("fam 15a gfcj") == "fam 15a gfci"  # "fam" is too short, "15a" holds a digit
    assert s.correct("zaxbi") == "zaxbi"  # "zaxby" is in one title only: never a correction target
    assert Speller.fit(TITLES, min_count=1).correct("zaxbi") == "zaxby"


def test_decomposer_adds_a_spelled_sub_query_only_when_a_word_was_corrected(tmp_path: Path) -> None:
    d = CatalogIntentDecomposer.fit(TITLES, min_count=2)
    intents = d.decompose("metal plate cover gcfi")
    assert intents[0].text == "metal plate cover gcfi" and intents[0].kind == "query"
    assert (intents[1].kind, intents[1].text, intents[1].weight) == ("spelled", "metal plate cover gfci", 0.8)
    assert "spelled" not in {i.kind for i in d.decompose("steel plate cover")}
    again = CatalogIntentDecomposer.load(d.save(tmp_path / "intent"))
    assert again.decompose("metal plate cover gcfi") == intents and again.version() == d.version()


def test_a_file_written_before_spelling_loads_without_the_sub_query(tmp_path: Path) -> None:
    path = CatalogIntentDecomposer.fit(TITLES, min_count=2).save(tmp_path / "intent")
    body = json.loads(path.read_text())
    del body["spelling"]
    path.write_text(json.dumps(body))
    old = CatalogIntentDecomposer.load(path)
    assert old.speller is None and [i.kind for i in old.decompose("gcfi")] == ["query"]
    body["spelling"] = {"min_count": 2, "counts": {"gfci": "three"}}
    path.write_text(json.dumps(body))
    with pytest.raises(CorruptArtifact, match="incomplete"):
        CatalogIntentDecomposer.load(path)
