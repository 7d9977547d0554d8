"""gRPC-level fuzzing: generated SearchRequests sent to a real in-process gateway end OK or
INVALID_ARGUMENT (as in-process validation predicts), never INTERNAL/UNKNOWN."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tandem_testing.fuzz import FuzzFailure
from tandem_testing.fuzz_requests import check_grpc_search, fuzz_server, proto_search_requests
from tandem.v1 import search_pb2


@pytest.fixture(scope="module")
def stub() -> Iterator[Any]:
    with fuzz_server() as s:
        yield s


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=proto_search_requests())
def test_server_answers_ok_or_invalid_argument(stub: Any, message: Any) -> None:
    check_grpc_search(stub, message)


def test_known_answers(stub: Any) -> None:
    drill = search_pb2.SearchRequest(query="cordless drill", top_k=3, filters=[
        search_pb2.Filter(field="price", range=search_pb2.Range(min=100, max=float("inf")))])
    assert check_grpc_search(stub, drill) == "ok"
    assert check_grpc_search(stub, search_pb2.SearchRequest(query="drill", top_k=0)) == "invalid"
    nan = search_pb2.SearchRequest(query="drill", filters=[
        search_pb2.Filter(field="price", range=search_pb2.Range(min=float("nan")))])
    assert check_grpc_search(stub, nan) == "invalid"


def test_a_disagreement_is_a_failure(stub: Any) -> None:
    """The property fails when the wire verdict is not the predicted one."""
    class Lying:
        def Search(self, message: Any, timeout: float) -> Any:
            return search_pb2.SearchResponse()

    with pytest.raises(FuzzFailure, match="server said ok"):
        check_grpc_search(Lying(), search_pb2.SearchRequest(query=" "))
