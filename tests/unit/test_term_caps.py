"""Field-level term-frequency caps applied before text reaches Lucene (tandem.sparse.documents)."""

from __future__ import annotations

import pytest

from tandem.catalog.item import Item
from tandem.errors import InvalidInput
from tandem.sparse.documents import cap_item, cap_terms, to_document


def test_cap_keeps_the_first_occurrences_and_drops_the_rest() -> None:
    assert cap_terms("drill drill, DRILL drills drill!", 3) == "drill drill, DRILL!"
    assert cap_terms("Cordless Drill 20V drill drill drill drill kit", 2) == "Cordless Drill 20V drill kit"


def test_plural_folding_means_inflection_does_not_escape_the_cap() -> None:
    assert cap_terms("hose hoses hose hoses", 2) == "hose hoses"


def test_sizes_units_and_short_tokens_are_never_capped() -> None:
    real = "Sharkbite 3/4 in. x 1/2 in. x 1/2 in. Brass Barb x Barb x Barb Reducer Tee"
    assert cap_terms(real, 3) == real  # "barb" x3 is within the cap; "in"/"x"/"1" are not capped
    assert cap_terms("2 in. x 2 in. x 2 in. x 2 in. x 2 in.", 1) == "2 in. x 2 in. x 2 in. x 2 in. x 2 in."


def test_text_under_the_cap_is_unchanged() -> None:
    text = "Kitchen Faucet Pull Down, Stainless Steel (Chrome)"
    assert cap_terms(text, 1) == text


def test_bad_cap_is_invalid_input_naming_the_field() -> None:
    with pytest.raises(InvalidInput, match="`term_cap`"):
        cap_terms("x", 0)


def test_document_caps_each_field_separately_and_contents_follows() -> None:
    item = Item(item_id="a", title="Hammer hammer hammer hammer", description="hammer for hammer work hammer hammer",
                attributes={"use": "hammer hammer hammer"})
    doc = to_document(item, term_cap=2)
    assert doc["title"].lower().split().count("hammer") == 2
    assert doc["description"].split().count("hammer") == 2
    assert doc["attributes"] == "use: hammer hammer"
    assert doc["contents"].lower().split().count("hammer") == 6  # 2 per field, three fields
    assert to_document(item)["title"] == item.title  # no cap by default: existing indexes unchanged


def test_cap_item_keeps_identity_and_never_empties_the_title() -> None:
    item = Item(item_id="b", title="Saw", version=4, price=9.5)
    assert cap_item(item, None) is item
    capped = cap_item(Item(item_id="c", title="Saw saw saw saw", version=2), 1)
    assert capped.title == "Saw" and capped.version == 2 and capped.item_id == "c"
