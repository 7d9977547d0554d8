"""Fuzz targets for search requests: the core validator, the proto conversion, the gRPC gateway.

Requests are the client's input: every field may be out of range, blank, NaN or unknown.
:func:`check_search_request` and :func:`check_proto_request` run ``validate_request`` in
process (directly and after a wire round trip through ``request_from_proto``);
:func:`check_grpc_search` sends the same messages to a real gateway (:func:`fuzz_server`)
and requires the server's verdict to be the in-process one, with ``INVALID_ARGUMENT``
naming the field. Failure type and shared strategies: :mod:`tandem_testing.fuzz`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import strategies as st

from tandem.errors import InvalidInput
from tandem.search.request import FILTER_FIELDS, FilterSpec, SearchConfig, SearchRequest, validate_request
from tandem_testing.fuzz import FuzzFailure, _crash, blank_text, edge_floats, full_text, proto_text

CONFIG = SearchConfig()
"""Limits the request properties check against (the production defaults)."""

#: A refusal must name one of the request's fields in backticks.
_REQUEST_FIELD = re.compile(r"`(query|top_k|user_id|filters(\[\d+\](\.(field|min|max|prefix|equals))?)?)`")


# --------------------------------------------------------------------------- strategies


def _queries(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        text,
        blank_text,
        st.builds(lambda a, b, c: a + b + c, blank_text, text, blank_text),
        st.sampled_from(["drill", "&amp;amp;", "&nbsp;", "x" * 1024, "x" * 1025, " " * 2000 + "a"]),
        st.integers(1020, 1030).map(lambda n: "é" * n),
    )


def _filter_specs(text: st.SearchStrategy[str]) -> st.SearchStrategy[FilterSpec]:
    field = st.one_of(st.sampled_from(FILTER_FIELDS), st.sampled_from(["Price", "", "brand ", "color"]), text)
    maybe_num = st.none() | edge_floats
    maybe_text = st.none() | text | blank_text | st.sampled_from(["/", "//a//", "Tools/Power Tools"])
    junk = st.builds(FilterSpec, field=field, min=maybe_num, max=maybe_num, prefix=maybe_text, equals=maybe_text)
    # Well-formed shapes too, so the value checks (NaN, inf, order, blank) are reached often.
    price = st.builds(FilterSpec, field=st.just("price"), min=maybe_num, max=maybe_num)
    category = st.builds(FilterSpec, field=st.just("category"), prefix=text | blank_text | st.just("Tools/Saws"))
    brand = st.builds(FilterSpec, field=st.just("brand"), equals=text | blank_text | st.just("Volta"))
    return st.one_of(price, category, brand, junk)


def search_requests(text: st.SearchStrategy[str] = full_text) -> st.SearchStrategy[SearchRequest]:
    """Core requests with arbitrary unicode, ``top_k`` around and far beyond the limits, and
    filters with unknown fields, missing/extra conditions and NaN/inf bounds."""
    top_k = st.one_of(st.none(), st.integers(-3, 1003), st.integers(), st.sampled_from([True, False]))
    return st.builds(
        SearchRequest, query=_queries(text), top_k=top_k,
        filters=(st.lists(_filter_specs(text), max_size=3) | st.lists(_filter_specs(text), min_size=15, max_size=18))
        .map(tuple), user_id=text | st.integers(250, 260).map(lambda n: "u" * n), debug=st.booleans(),
    )


def proto_search_requests() -> st.SearchStrategy[Any]:
    """``tandem.v1.SearchRequest`` messages as a client could send them (every proto field,
    ``top_k`` over the whole uint32 range, each ``condition`` of the oneof or none)."""
    from tandem.v1 import search_pb2

    def make_filter(field: str, which: str, lo: float | None, hi: float | None, s: str) -> Any:
        if which == "range":
            return search_pb2.Filter(field=field, range=search_pb2.Range(min=lo, max=hi))
        if which in ("prefix", "equals"):
            return search_pb2.Filter(field=field, **{which: s})
        return search_pb2.Filter(field=field)

    field = st.one_of(st.sampled_from(FILTER_FIELDS), proto_text)
    value = st.one_of(proto_text, blank_text)
    num = st.none() | edge_floats
    filt = st.one_of(
        st.builds(make_filter, field, st.sampled_from(["range", "prefix", "equals", "none"]), num, num, value),
        st.builds(make_filter, st.just("price"), st.just("range"), num, num, value),
        st.builds(make_filter, st.just("category"), st.just("prefix"), num, num, value),
        st.builds(make_filter, st.just("brand"), st.just("equals"), num, num, value),
    )

    def make_request(query: str, top_k: int | None, filters: list[Any], user_id: str, debug: bool) -> Any:
        req = search_pb2.SearchRequest(query=query, filters=filters, user_id=user_id, debug=debug)
        if top_k is not None:
            req.top_k = top_k
        return req

    top_k = st.one_of(st.none(), st.integers(0, 1002), st.integers(0, 2**32 - 1))
    return st.builds(make_request, _queries(proto_text), top_k, st.lists(filt, max_size=3), proto_text,
                     st.booleans())


# --------------------------------------------------------------------------- properties


def check_search_request(request: SearchRequest, config: SearchConfig = CONFIG) -> str:
    """``validate_request`` returns a request within every limit, or raises ``InvalidInput``
    naming the field; nothing else. Returns ``"ok"`` or ``"invalid"``."""
    try:
        query, top_k = validate_request(request, config)
    except InvalidInput as exc:
        if not _REQUEST_FIELD.search(str(exc)):
            raise FuzzFailure(f"refusal names no field: {exc!s:.200} for {request!r:.300}") from None
        return "invalid"
    except Exception as exc:
        raise _crash("validate_request", exc, request) from exc
    problems = []
    if not query or query != query.strip() or len(request.query) > config.max_query_chars:
        problems.append(f"query {query!r:.60}")
    if isinstance(top_k, bool) or not 1 <= top_k <= config.max_top_k:
        problems.append(f"top_k {top_k!r}")
    if len(request.filters) > config.max_filters:
        problems.append(f"{len(request.filters)} filters")
    for f in request.filters:
        if len(f.prefix or "") > config.max_field_chars or len(f.equals or "") > config.max_field_chars:
            problems.append("filter string over the limit")
        if f.field not in FILTER_FIELDS:
            problems.append(f"field {f.field!r}")
        for bound in (f.min, f.max):
            if bound is not None and not bound >= 0:
                problems.append(f"bound {bound!r}")
        if f.min is not None and f.max is not None and f.min > f.max:
            problems.append("min > max")
    if problems:
        raise FuzzFailure(f"accepted an invalid request ({'; '.join(problems)}): {request!r:.300}")
    return "ok"


def check_proto_request(message: Any, config: SearchConfig = CONFIG) -> str:
    """The wire path: serialise → parse → ``request_from_proto`` → ``validate_request``;
    the conversion itself never raises, and validation keeps :func:`check_search_request`'s
    contract."""
    from tandem.v1 import search_pb2
    from tandem_services.convert import request_from_proto

    try:
        parsed = search_pb2.SearchRequest.FromString(message.SerializeToString())
        request = request_from_proto(parsed)
    except Exception as exc:
        raise _crash("request_from_proto", exc, message) from exc
    if (request.top_k is None) != (not message.HasField("top_k")):
        raise FuzzFailure(f"`top_k` presence lost in conversion: {message!r:.300}")
    return check_search_request(request, config)


# --------------------------------------------------------------------------- gRPC


@contextmanager
def fuzz_server() -> Iterator[Any]:
    """A real gateway on a free loopback port over the tiny catalog (two term-overlap
    sources, a catalog for filters); yields a ``SearchServiceStub`` connected to it."""
    import grpc

    from tandem.search.catalog import InMemoryCatalog
    from tandem.search.orchestrator import HybridSearcher
    from tandem_testing.term_overlap import TermOverlapRetriever
    from tandem_testing.tiny_catalog import tiny_catalog
    from tandem.v1 import search_pb2_grpc
    from tandem_services.app import gateway_server
    from tandem_services.runner import BackgroundServer
    from tandem_services.server import ServerOptions

    items = tiny_catalog()
    sources = [TermOverlapRetriever(items, name="bm25"), TermOverlapRetriever(items, name="generative")]
    searcher = HybridSearcher(sources, catalog=InMemoryCatalog(items))
    with BackgroundServer(lambda: gateway_server(searcher, ServerOptions(drain_s=0, grace_s=0.5), workers=4)) as srv:
        with grpc.insecure_channel(srv.address) as channel:
            yield search_pb2_grpc.SearchServiceStub(channel)


def check_grpc_search(stub: Any, message: Any) -> str:
    """A generated request over the wire ends ``OK`` or ``INVALID_ARGUMENT`` naming the field,
    and the server's verdict is the one in-process validation gives; ``INTERNAL``,
    ``UNKNOWN`` or any other status is a failure."""
    import grpc

    expected = check_proto_request(message)
    try:
        response = stub.Search(message, timeout=10)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
        if code != grpc.StatusCode.INVALID_ARGUMENT:
            raise FuzzFailure(f"Search answered {code.name}: {details[:200]} for {message!r:.300}",
                              "internal") from None
        if not _REQUEST_FIELD.search(details):
            raise FuzzFailure(f"INVALID_ARGUMENT names no field: {details[:200]}") from None
        got = "invalid"
    else:
        if message.HasField("top_k") and len(response.hits) > message.top_k:
            raise FuzzFailure(f"{len(response.hits)} hits for top_k={message.top_k}")
        got = "ok"
    if got != expected:
        raise FuzzFailure(f"the server said {got}, in-process validation {expected}, for {message!r:.300}")
    return got
