"""Intent decomposition: price rules, sizes, brands tagged on fixture titles, sub-queries,
filter intents through the hybrid searcher, save/load round trip."""

from __future__ import annotations

import json

import pytest

from tandem.catalog.item import Item
from tandem.errors import CorruptArtifact, InvalidInput
from tandem.intent import CatalogIntentDecomposer, IntentFilter, find_sizes, parse_price
from tandem.retriever import Hit, Retriever
from tandem.search.catalog import InMemoryCatalog, intent_filters
from tandem.search.orchestrator import HybridSearcher
from tandem.search.request import FilterSpec, SearchRequest

# Invented titles in the catalog's house style: <Brand> <modifiers> <type> in <colour/finish>.
BRANDS = ["Delta", "Hampton Bay", "Everbilt", "Glacier Bay", "Moen"]
TYPES = ["Kitchen Faucet", "Ceiling Fan", "Shower Head", "Toilet Seat", "Towel Bar", "Door Hinge", "Wall Plate"]
FINISHES = ["Chrome", "Brushed Nickel", "Oil Rubbed Bronze", "White", "Black"]
TITLES = [f"{b} {s} {t} in {f}"
          for i, (b, t, f, s) in enumerate((b, t, f, s) for b in BRANDS for t in TYPES for f in FINISHES
                                           for s in ["Classic", "1/2 in. Steel"])
          if i % 3 == 0]
PRICES = [float(10 + (i * 7) % 90) for i in range(len(TITLES))]


@pytest.fixture(scope="module")
def decomposer() -> CatalogIntentDecomposer:
    return CatalogIntentDecomposer.fit(TITLES, PRICES, min_count=2)


@pytest.mark.parametrize(("query", "lo", "hi"), [
    ("drill under $50", None, 50.0),
    ("lamp under 50", None, 50.0),
    ("rug below 20 dollars", None, 20.0),
    ("faucet less than 100", None, 100.0),
    ("vanity < 300", None, 300.0),
    ("grill over $200", 200.0, None),
    ("mirror $20-$40", 20.0, 40.0),
    ("rug between 10 and 20", 10.0, 20.0),
    ("paint $40", 30.0, 50.0),  # a bare amount means about it: ±25 %
])
def test_price_phrases(query: str, lo: float | None, hi: float | None) -> None:
    p = parse_price(query)
    assert p is not None and (p.min, p.max) == (lo, hi)
    assert not p.relative


def test_no_price_in_sizes_or_plain_words() -> None:
    assert parse_price("under 6 ft fence") is None
    assert parse_price("sand under 50 lb bag") is None  # not "under 5" followed by "0 lb"
    assert parse_price("wire less than 12.5 gauge") is None
    assert parse_price("under counter light") is None
    assert parse_price("2x4 lumber") is None


def test_cheap_is_relative_to_the_catalog(decomposer: CatalogIntentDecomposer) -> None:
    p = parse_price("cheap ceiling fan", cheap_max=12.5)
    assert p is not None and p.relative and (p.min, p.max) == (None, 12.5)
    assert parse_price("cheap fan").max is None  # no prices: the word goes, no bound
    parsed = decomposer.parse("cheap ceiling fan")
    assert parsed.price is not None and parsed.price.max is not None
    assert parsed.price.max <= max(PRICES) and parsed.core == "ceiling fan"


@pytest.mark.parametrize(("query", "canonical"), [
    ("1/2 inch pex pipe", ["1/2 in."]), ("1 1/2 in. drain", ["1-1/2 in."]), ("2x4 stud 8 ft", ["2 x 4", "8 ft."]),
    ("10 gal shop vac", ["10 gal."]), ("20 volt drill", ["20-Volt"]), ("kitchen faucet", []),
])
def test_sizes(query: str, canonical: list[str]) -> None:
    assert [s.canonical for s in find_sizes(query)] == canonical


def test_brands_types_and_dimensions_tagged(decomposer: CatalogIntentDecomposer) -> None:
    p = decomposer.parse("Hampton Bay ceiling fan 1/2 inch in brushed nickel")
    labels = {s.label: s.text for s in p.spans}
    assert labels["brand"] == "hampton bay"
    assert labels["size"] == "1/2 in."
    assert "fan" in labels["product_type"]
    assert labels["finish"] == "brushed nickel"
    assert {s.label: s.text for s in decomposer.parse("delta shower head").spans}.get("brand") == "delta"
    assert p.normalized == "hampton bay ceiling fan 1/2 in. in brushed nickel"


def test_decompose_sub_queries_and_price_filter(decomposer: CatalogIntentDecomposer) -> None:
    intents = decomposer.decompose("moen shower head chrome under $40")
    assert intents[0].kind == "query" and intents[0].text == "moen shower head chrome" and intents[0].weight == 1.0
    kinds = {i.kind: i for i in intents}
    assert kinds["product_type"].text == "shower head"
    assert kinds["brand"].text == "moen shower head"
    assert kinds["finish"].text == "chrome shower head"
    assert kinds["filter"].filter == IntentFilter(max_price=40.0) and kinds["filter"].weight == 0.0
    assert kinds["filter"].text == "price<=40"  # display only
    assert intent_filters(intents) == [FilterSpec("price", min=None, max=40.0)]
    between = {i.kind: i for i in decomposer.decompose("delta faucet between $20 and 60 dollars")}
    assert between["filter"].filter == IntentFilter(min_price=20.0, max_price=60.0)
    assert len([i for i in intents if i.kind != "filter"]) <= decomposer.max_intents
    assert [i.kind for i in decomposer.decompose("hinge")] == ["query"]  # nothing to split


def test_save_load_round_trip(decomposer: CatalogIntentDecomposer, tmp_path) -> None:
    path = decomposer.save(tmp_path / "intent")
    assert json.loads(path.read_text())["format"] == "tandem.intent/1"
    again = CatalogIntentDecomposer.load(tmp_path / "intent")
    for q in ("hampton bay ceiling fan white", "cheap towel bar", "glacier bay toilet seat < 30"):
        assert again.decompose(q) == decomposer.decompose(q)
    assert again.version() == decomposer.version()
    path.write_text('{"format": "tandem.intent/0"}')
    with pytest.raises(CorruptArtifact, match="format"):
        CatalogIntentDecomposer.load(path)
    with pytest.raises(InvalidInput, match="`path`"):
        CatalogIntentDecomposer.load(tmp_path / "missing")


class _Echo(Retriever):
    """Returns every catalog item for every query, in a fixed order."""

    name = "bm25"

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids
        self.seen: list[str] = []

    def retrieve(self, queries, k):
        self.seen.extend(queries)
        return [[Hit(i, 1.0 / (r + 1), self.name) for r, i in enumerate(self.ids[:k])] for _ in queries]

    def version(self) -> str:
        return "echo"


def test_hybrid_searcher_applies_price_intent_softly(decomposer: CatalogIntentDecomposer) -> None:
    items = [Item(item_id="cheap", title="Moen Shower Head", price=20.0),
             Item(item_id="dear", title="Moen Shower Head Deluxe", price=90.0),
             Item(item_id="unpriced", title="Moen Shower Head Kit")]
    source = _Echo(["dear", "cheap", "unpriced"])
    searcher = HybridSearcher([source], intents=decomposer, catalog=InMemoryCatalog(items))
    try:
        result = searcher.search(SearchRequest(query="moen shower head under $40", top_k=5))
    finally:
        searcher.close()
    assert [h.item_id for h in result.hits] == ["cheap", "unpriced"]  # no price: kept
    assert not any("price" in q for q in source.seen)  # the filter intent is not retrieved
    assert any(i.kind == "filter" for i in result.intents)
