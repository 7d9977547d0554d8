"""The typed constraint of ``filter`` intents: :class:`IntentFilter` validation, the
``Intent``/``filter`` pairing, the result cache's JSON and the proto round trip (including the
refusal of text-only filter intents from older servers)."""

from __future__ import annotations

import math

import pytest

from tandem.errors import InvalidInput, Unavailable
from tandem.intent import FILTER_INTENT, Intent, IntentFilter, parse_price
from tandem.search.catalog import intent_filters
from tandem.search.request import FilterSpec
from tandem.search.results import ResultHit, SearchResult
from tandem.v1 import intent_pb2, search_pb2
from tandem_services.client import RemoteIntents
from tandem_services.convert import intent_from_proto, intent_to_proto, result_to_proto


@pytest.mark.parametrize("kwargs, field", [
    ({"min_price": -1.0}, "`filter.min_price`"),
    ({"max_price": math.nan}, "`filter.max_price`"),
    ({"max_price": math.inf}, "`filter.max_price`"),
    ({"min_price": True}, "`filter.min_price`"),
    ({"max_price": "50"}, "`filter.max_price`"),
    ({"min_price": 60.0, "max_price": 50.0}, "`filter.min_price` (60) is greater than `filter.max_price` (50)"),
    ({}, "`filter` constrains nothing"),
])
def test_bad_values_name_the_field(kwargs, field) -> None:
    with pytest.raises(InvalidInput) as err:
        IntentFilter(**kwargs)
    assert field in str(err.value)


def test_good_values_text_and_dict_form() -> None:
    f = IntentFilter(min_price=0, max_price=50)
    assert f.min_price == 0.0 and isinstance(f.min_price, float) and f.text() == "price>=0 price<=50"
    assert IntentFilter(max_price=12.5).text() == "price<=12.5"
    assert IntentFilter(min_price=5.0, max_price=5.0).as_dict() == {"min_price": 5.0, "max_price": 5.0}
    assert IntentFilter.from_dict(IntentFilter(max_price=9.0).as_dict()) == IntentFilter(max_price=9.0)
    with pytest.raises(InvalidInput, match="unknown fields"):
        IntentFilter.from_dict({"max_price": 1.0, "colour": "red"})


def test_filter_is_set_exactly_on_filter_intents() -> None:
    with pytest.raises(InvalidInput, match="`filter` is required"):
        Intent("price<=50", kind=FILTER_INTENT)
    with pytest.raises(InvalidInput, match="`filter` is required"):
        Intent("drill", kind="query", filter=IntentFilter(max_price=50.0))
    i = Intent.of_filter(IntentFilter(max_price=50.0))
    assert (i.kind, i.weight, i.text) == (FILTER_INTENT, 0.0, "price<=50")
    assert intent_filters([Intent("drill"), i]) == [FilterSpec("price", min=None, max=50.0)]


def test_price_rule_builds_the_filter_and_opens_unrepresentable_bounds() -> None:
    p = parse_price("drill between $20 and $30")
    assert p is not None and p.filter() == IntentFilter(min_price=20.0, max_price=30.0)
    huge = parse_price("drill under $" + "9" * 400)  # float("9" * 400) is inf
    assert huge is not None and huge.max == math.inf and huge.filter() is None
    cheap = parse_price("cheap fan")
    assert cheap is not None and cheap.filter() is None  # no catalog prices: no bound


def test_result_cache_round_trip_keeps_the_filter() -> None:
    intents = [Intent("drill"), Intent.of_filter(IntentFilter(min_price=10.0, max_price=20.0))]
    r = SearchResult(hits=[ResultHit("a", 1.0, "A", [("bm25", 1, 2.0)])], intents=intents, versions={"bm25": "1"})
    assert SearchResult.from_bytes(r.to_bytes()).intents == intents
    legacy = r.to_bytes().replace(b',"filter":{"min_price":10.0,"max_price":20.0}', b"")
    with pytest.raises(ValueError):  # an entry from before typed filters: the memo recomputes it
        SearchResult.from_bytes(legacy)


def test_proto_round_trip() -> None:
    intents = [Intent("drill", "query", 1.0), Intent.of_filter(IntentFilter(max_price=40.0)),
               Intent.of_filter(IntentFilter(min_price=0.0))]
    wire = [search_pb2.Intent.FromString(intent_to_proto(i).SerializeToString()) for i in intents]
    assert not wire[0].HasField("filter") and not wire[1].filter.HasField("min_price")
    assert wire[2].filter.HasField("min_price") and wire[2].filter.min_price == 0.0
    assert [intent_from_proto(w) for w in wire] == intents
    resp = result_to_proto(SearchResult(hits=[], intents=intents, versions={}))
    assert [intent_from_proto(w) for w in resp.intents] == intents


@pytest.mark.parametrize("wire, message", [
    (search_pb2.Intent(text="price<=40", kind="filter"), "`intents[1].filter` is missing"),
    (search_pb2.Intent(text="x", kind="filter", filter=search_pb2.IntentFilter(min_price=-2)),
     "`intents[1].filter.min_price`"),
    (search_pb2.Intent(text="x", kind="filter", filter=search_pb2.IntentFilter()), "`intents[1].filter` constrains"),
    (search_pb2.Intent(text="x", kind="query", filter=search_pb2.IntentFilter(max_price=1)), "`intents[1]`"),
])
def test_bad_wire_intents_are_refused_naming_the_field(wire, message) -> None:
    with pytest.raises(InvalidInput) as err:
        intent_from_proto(wire, "intents[1]")
    assert message in str(err.value)


def test_remote_intents_degrade_on_a_text_only_filter_intent() -> None:
    """An older intent server's text-only filter is the server's fault: ``Unavailable`` (the
    searcher then degrades to the whole query), never ``InvalidInput`` for the caller."""
    class Stub:
        def Decompose(self, request, timeout=None, metadata=None):
            return intent_pb2.DecomposeResponse(version="old", intents=[
                search_pb2.Intent(text="drill", kind="query", weight=1.0),
                search_pb2.Intent(text="price<=40", kind="filter", weight=0.0)])

    remote = RemoteIntents("localhost:1")  # channels connect lazily; the stub never uses it
    remote._stub = Stub()
    try:
        with pytest.raises(Unavailable, match=r"`intents\[1\]\.filter` is missing"):
            remote.decompose("drill under $40")
    finally:
        remote._channel.close()
