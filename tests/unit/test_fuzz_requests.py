"""Fuzzing of search request validation and the proto → request conversion: any input is
either a request within every limit or ``InvalidInput`` naming the field."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings

from tandem.search.request import FilterSpec, SearchRequest
from tandem_testing.fuzz import FuzzFailure
from tandem_testing.fuzz_requests import check_proto_request, check_search_request, proto_search_requests, \
    search_requests

FUZZ = settings(max_examples=300, deadline=None, database=None)


@FUZZ
@given(search_requests())
def test_validate_request_accepts_or_names_the_field(request: SearchRequest) -> None:
    check_search_request(request)


@FUZZ
@given(proto_search_requests())
def test_proto_requests_convert_and_validate(message) -> None:
    check_proto_request(message)


@pytest.mark.parametrize("spec, outcome", [
    (FilterSpec("price", min=math.nan), "invalid"),
    (FilterSpec("price", max=-math.inf), "invalid"),
    (FilterSpec("price", min=math.inf, max=math.inf), "ok"),
    (FilterSpec("price", min=2.0, max=1.0), "invalid"),
    (FilterSpec("price", prefix="a"), "invalid"),
    (FilterSpec("category", prefix=" / / "), "invalid"),
    (FilterSpec("brand", equals="\u3000"), "invalid"),
    (FilterSpec("colour", equals="red"), "invalid"),
    (FilterSpec("brand", equals="Volta"), "ok"),
])
def test_known_filter_edges(spec: FilterSpec, outcome: str) -> None:
    assert check_search_request(SearchRequest("drill", filters=(spec,))) == outcome


def test_the_property_catches_a_wrong_exception_type() -> None:
    """The property must fail on a crash, or the fuzz tests above could not fail."""
    bad = SearchRequest("drill", filters=(FilterSpec("price", min="cheap"),))  # type: ignore[arg-type]
    with pytest.raises(FuzzFailure, match="TypeError"):
        check_search_request(bad)
