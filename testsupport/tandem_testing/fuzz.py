"""Property-based fuzzing of everything that parses client or producer input.

Each target is a pair: a Hypothesis strategy that generates mostly-wrong input (arbitrary
unicode, NaN/inf, odd JSON shapes, junk rows) and a ``check_*`` property that runs the code
under test and returns an outcome label (``"ok"`` or the refusal kind). A property raises
:class:`FuzzFailure` when the code broke its contract: an exception other than the domain
error, a refusal that does not name the field, or an accepted input that violates an
invariant. ``tests/unit/test_fuzz_*.py`` run the properties with a few hundred examples;
``python -m bench.fuzz`` runs the same ones with 100,000+ cases and counts outcomes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from pydantic import ValidationError

from tandem.catalog.events import EventError, EventReason, ItemEvent, decode_event, encode_event, parse_line
from tandem.catalog.item import Item
from tandem.catalog.loaders import load_items
from tandem.errors import InvalidInput
from tandem.search.request import FILTER_FIELDS, FilterSpec, SearchConfig, SearchRequest, validate_request

CONFIG = SearchConfig()
"""Limits the request properties check against (the production defaults)."""

#: A refusal must name one of the request's fields in backticks.
_REQUEST_FIELD = re.compile(r"`(query|top_k|user_id|filters(\[\d+\](\.(field|min|max|prefix|equals))?)?)`")


class FuzzFailure(AssertionError):
    """The code under test broke its contract for one generated input.

    ``kind`` is ``crash`` (an exception other than the domain error), ``internal`` (a gRPC
    status other than OK / INVALID_ARGUMENT) or ``contract`` (a wrong answer).
    """

    def __init__(self, message: str, kind: str = "contract") -> None:
        super().__init__(message)
        self.kind = kind


def _crash(target: str, exc: BaseException, value: Any) -> FuzzFailure:
    return FuzzFailure(f"{target}: {type(exc).__name__}: {str(exc)[:200]} for input {value!r:.300}", "crash")


# --------------------------------------------------------------------------- strategies

#: Text that protobuf can carry (no lone surrogates); ``full_text`` also has those.
proto_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
full_text = st.text(max_size=40)
_spaces = st.text(st.sampled_from(" \t\n\r\u00a0\u2003\u200b\u3000"), max_size=5)
_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**6), max_value=10**6).map(float),
    st.sampled_from([0.0, -0.0, 1e-300, 5e-324, 1e308, math.inf, -math.inf, math.nan]),
)


def _queries(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        text,
        _spaces,
        st.builds(lambda a, b, c: a + b + c, _spaces, text, _spaces),
        st.sampled_from(["drill", "&amp;amp;", "&nbsp;", "x" * 1024, "x" * 1025, " " * 2000 + "a"]),
        st.integers(1020, 1030).map(lambda n: "é" * n),
    )


def _filter_specs(text: st.SearchStrategy[str]) -> st.SearchStrategy[FilterSpec]:
    field = st.one_of(st.sampled_from(FILTER_FIELDS), st.sampled_from(["Price", "", "brand ", "color"]), text)
    maybe_num = st.none() | _numbers
    maybe_text = st.none() | text | _spaces | st.sampled_from(["/", "//a//", "Tools/Power Tools"])
    junk = st.builds(FilterSpec, field=field, min=maybe_num, max=maybe_num, prefix=maybe_text, equals=maybe_text)
    # Well-formed shapes too, so the value checks (NaN, inf, order, blank) are reached often.
    price = st.builds(FilterSpec, field=st.just("price"), min=maybe_num, max=maybe_num)
    category = st.builds(FilterSpec, field=st.just("category"), prefix=text | _spaces | st.just("Tools/Saws"))
    brand = st.builds(FilterSpec, field=st.just("brand"), equals=text | _spaces | st.just("Volta"))
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
    value = st.one_of(proto_text, _spaces)
    num = st.none() | _numbers
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


_json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), full_text,
)
json_values = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(full_text, inner, max_size=4),
    max_leaves=12,
)
"""Arbitrary JSON-shaped Python values (what ``json.loads`` can return)."""

_item_id = st.one_of(st.sampled_from(["t01", " t01 ", "", "a\x00b", "x" * 129]), proto_text, st.integers(), json_values)
_simple_id = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)
_version = st.one_of(st.integers(-2, 3), st.booleans(), st.floats(allow_nan=True), full_text, st.none())


def _item_bodies() -> st.SearchStrategy[Any]:
    fields: dict[str, st.SearchStrategy[Any]] = {
        "item_id": _item_id,
        "title": st.one_of(st.just("Cordless Drill"), full_text, json_values),
        "description": full_text | json_values,
        "brand": full_text | st.none(),
        "category": st.one_of(full_text, st.lists(full_text, max_size=3), json_values),
        "attributes": st.dictionaries(full_text, full_text, max_size=3) | json_values,
        "price": st.one_of(_numbers, full_text, st.none()),
        "version": _version,
        "colour": full_text,
    }
    required = st.fixed_dictionaries({"item_id": fields["item_id"], "title": fields["title"]})
    optional = st.fixed_dictionaries({}, optional=fields)
    junk = st.one_of(st.builds(lambda a, b: {**b, **a}, required, optional), optional, json_values)
    # Half are well-typed items, so validation gets past the first field and accepts some.
    good = st.fixed_dictionaries(
        {"item_id": _simple_id, "title": st.text(min_size=1, max_size=20)},
        optional={"description": full_text, "brand": full_text, "category": st.lists(full_text, max_size=3),
                  "attributes": st.dictionaries(full_text, full_text, max_size=2),
                  "price": st.floats(0, 1e6) | _numbers, "version": st.integers(0, 1)},
    )
    return st.one_of(good, junk)


def _good_events() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"op": st.sampled_from(["upsert", "delete"]), "item": _item_bodies(), "version": st.integers(0, 1)},
    )


def event_bodies() -> st.SearchStrategy[Any]:
    """Decoded event values: near-valid ``{op, item, version}`` objects and arbitrary JSON."""
    body = st.fixed_dictionaries(
        {"op": st.one_of(st.sampled_from(["upsert", "delete"]), full_text, json_values)},
        optional={"item": _item_bodies(), "version": _version, "extra": json_values},
    )
    return st.one_of(_good_events(), body, json_values)


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=True)


def _dump_utf8(value: Any) -> str:
    # Lone surrogates cannot be written as UTF-8; JSON's \u escapes can carry them.
    text = _dump(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, allow_nan=True)
    return text


_encodings = st.sampled_from(["bytes", "bytes", "str", "truncated", "raw"])
_raw_values = st.one_of(st.binary(max_size=64), st.none(), full_text)
_key_kinds = st.sampled_from(["own_bytes", "own_text", "other"])
_other_keys = st.one_of(st.sampled_from([b"t01", " t01", b"", None, b"\xff\xfe"]), st.binary(max_size=8), full_text)


def event_records() -> st.SearchStrategy[tuple[Any, Any]]:
    """``(key, value)`` Kafka records: encoded near-valid events, truncated or raw bytes, and
    keys that match, differ, are blank, missing or not UTF-8."""

    def encode(body: Any, how: str) -> bytes | str:
        text = _dump(body)
        if how == "str":
            return text
        data = text.encode("utf-8", "surrogatepass")
        return data[: len(data) // 2] if how == "truncated" else data

    @st.composite
    def records(draw: st.DrawFn) -> tuple[Any, Any]:
        body = draw(event_bodies())
        how = draw(_encodings)
        value = draw(_raw_values) if how == "raw" else encode(body, how)
        item = body.get("item") if isinstance(body, dict) else None
        own = item.get("item_id") if isinstance(item, dict) else None
        # The body's own id (as a producer would key it) half the time, so validation gets past the key.
        which = draw(_key_kinds)
        own_text = own if isinstance(own, str) else str(own)
        if which == "own_bytes":
            return own_text.encode("utf-8", "surrogatepass"), value
        if which == "own_text":
            return own_text, value
        return draw(_other_keys), value

    return records()


def event_lines() -> st.SearchStrategy[str]:
    """Lines of an event file: events, bare items, arbitrary JSON and non-JSON text."""
    return st.one_of(event_bodies().map(_dump), _item_bodies().map(_dump), full_text,
                     st.builds(lambda s, n: s[:n], event_bodies().map(_dump), st.integers(0, 40)))


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


def _check_event(event: ItemEvent, target: str, value: Any) -> None:
    if event.op == "upsert" and (event.item is None or event.item.version != event.version
                                 or event.item.item_id != event.item_id):
        raise FuzzFailure(f"{target}: inconsistent upsert {event!r:.300} from {value!r:.300}")
    if event.op == "delete" and event.item is not None:
        raise FuzzFailure(f"{target}: delete with a body {event!r:.300} from {value!r:.300}")
    try:  # what we accept must survive our own codec unchanged
        again = decode_event(*encode_event(event))
    except Exception as exc:
        raise FuzzFailure(f"{target}: re-encoding {event!r:.300} failed: {type(exc).__name__}: {exc!s:.200}") from exc
    if again != event:
        raise FuzzFailure(f"{target}: codec round trip changed {event!r:.300} into {again!r:.300}")


def check_event_record(key: Any, value: Any) -> str:
    """``decode_event`` returns a consistent :class:`ItemEvent` whose id is the record key,
    or raises :class:`EventError` with a known reason; never another exception. Returns
    ``"ok"`` or the reason code."""
    try:
        event = decode_event(key, value)
    except EventError as exc:
        if not isinstance(exc.reason, EventReason) or not str(exc):
            raise FuzzFailure(f"decode_event: EventError without reason/message for {value!r:.300}") from None
        return exc.reason.value
    except Exception as exc:
        raise _crash("decode_event", exc, (key, value)) from exc
    key_text = key.decode("utf-8") if isinstance(key, bytes) else key
    if event.item_id != key_text.strip():
        raise FuzzFailure(f"decode_event: item_id {event.item_id!r} is not the key {key!r}")
    _check_event(event, "decode_event", value)
    return "ok"


def check_event_line(line: str) -> str:
    """``parse_line`` returns a consistent event or raises :class:`EventError`; nothing else."""
    try:
        event = parse_line(line)
    except EventError as exc:
        if not isinstance(exc.reason, EventReason) or not str(exc):
            raise FuzzFailure(f"parse_line: EventError without reason/message for {line!r:.300}") from None
        return exc.reason.value
    except Exception as exc:
        raise _crash("parse_line", exc, line) from exc
    _check_event(event, "parse_line", line)
    return "ok"


# --------------------------------------------------------------------------- catalog files

CSV_COLUMNS = ("item_id", "title", "description", "brand", "category", "attributes", "price", "version")


@dataclass(frozen=True)
class RawLine:
    """A catalog row written verbatim (broken JSON, blank lines), not JSON-encoded."""

    text: str


def catalog_rows() -> st.SearchStrategy[list[Any]]:
    """JSONL rows: good items, duplicates, invalid items, non-objects, broken JSON and blank lines.
    Each row is a JSON-able value (a ``str`` too) or a :class:`RawLine`."""
    good = st.builds(lambda i, t, p: {"item_id": f"g{i}", "title": t or "x", "price": p},
                     st.integers(0, 6), st.sampled_from(["Drill", "Saw &amp; Blade", " Paint "]),
                     st.none() | st.floats(0, 1e6))
    text_rows = st.one_of(st.sampled_from(["", "   ", "{", '{"item_id": ', "[1, 2", "nul\x00l", "\t"]),
                          proto_text.map(lambda s: s.replace("\n", " ").replace("\r", " "))).map(RawLine)
    row = st.one_of(good, good, _item_bodies(), json_values, text_rows)
    return st.lists(row, max_size=12)


def check_jsonl_file(tmp: Path, rows: Sequence[Any], strict: bool = False) -> str:
    """``load_items`` on a JSONL file of ``rows``: every non-blank line is loaded or skipped
    with its own line number and a reason (an oracle recomputes which), ``strict`` raises
    ``InvalidInput`` at the first bad line; nothing else."""
    path = tmp / "catalog.jsonl"
    lines = [r.text if isinstance(r, RawLine) else _dump_utf8(r) for r in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    expected_bad, seen, data_rows = [], set(), 0
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        data_rows += 1
        try:
            obj = json.loads(line)
            item = Item.model_validate(obj) if isinstance(obj, dict) else None
        except (ValueError, ValidationError):
            item = None
        if item is None or item.item_id in seen:
            expected_bad.append(n)
        else:
            seen.add(item.item_id)
    return _check_load(path, data_rows, expected_bad, strict)


def csv_files() -> st.SearchStrategy[tuple[list[str], list[list[str]]]]:
    """A CSV header (always with ``item_id``, sometimes unknown columns) and rows of arbitrary
    cells, including quotes, separators, newlines, wrong column counts and bad numbers."""
    header = st.lists(st.sampled_from(CSV_COLUMNS + ("colour",)), unique=True, max_size=5).map(
        lambda h: ["item_id", *[c for c in h if c != "item_id"]])
    cell = st.one_of(st.sampled_from(["", "t01", "Drill", "-1", "12.5", "nan", "inf", '{"a": "b"}', "[1]", "{",
                                      "a,b", 'say "hi"', "line\nbreak", " "]),
                     proto_text)
    return st.tuples(header, st.lists(st.lists(cell, min_size=0, max_size=6), max_size=10))


def check_csv_file(tmp: Path, header: list[str], rows: list[list[str]], strict: bool = False) -> str:
    """``load_items`` on a CSV file: loaded + skipped == non-blank rows, every skip is
    reported at a line inside the file, ``strict`` raises ``InvalidInput``; nothing else."""
    path = tmp / "catalog.csv"
    buf = io.StringIO(newline="")
    # "\r\n" rows make the writer quote cells holding "\r" or "\n" (with "\n" it leaves a lone
    # "\r" unquoted, which any reader then splits: a different file than the one meant).
    csv.writer(buf, lineterminator="\r\n").writerows([header, *rows])
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    data_rows = sum(1 for r in rows if any(c.strip() for c in r))
    try:
        result = load_items(path, strict=False)
    except Exception as exc:
        raise _crash("load_items(csv)", exc, (header, rows)) from exc
    total_lines = len(buf.getvalue().splitlines())  # an upper bound: splitlines knows more breaks
    if len(result.items) + result.skipped != result.rows or result.rows != data_rows:
        raise FuzzFailure(f"csv: {result.summary()} but the file has {data_rows} rows: {(header, rows)!r:.300}")
    lines = [e.line for e in result.errors]
    if lines != sorted(set(lines)) or any(not 2 <= n <= total_lines for n in lines):
        raise FuzzFailure(f"csv: skip lines {lines} out of order or outside 2..{total_lines}: {rows!r:.300}")
    if strict:
        return _check_strict(path, result.errors[0].line if result.errors else None)
    return "skips" if result.errors else "ok"


def _check_load(path: Path, data_rows: int, expected_bad: list[int], strict: bool) -> str:
    try:
        result = load_items(path, strict=False)
    except Exception as exc:
        raise _crash("load_items", exc, path.read_text(encoding="utf-8", errors="replace")) from exc
    got_bad = [e.line for e in result.errors]
    if result.rows != data_rows or len(result.items) + result.skipped != data_rows or got_bad != expected_bad:
        raise FuzzFailure(f"{path.name}: {result.summary()}, skipped lines {got_bad}; expected {data_rows} rows "
                          f"with bad lines {expected_bad}")
    if any(str(e.path) != str(path) or not e.reason for e in result.errors):
        raise FuzzFailure(f"{path.name}: a skip without path or reason: {result.errors!r:.300}")
    if strict:
        return _check_strict(path, expected_bad[0] if expected_bad else None)
    return "skips" if expected_bad else "ok"


def _check_strict(path: Path, first_bad: int | None) -> str:
    try:
        load_items(path, strict=True)
    except InvalidInput as exc:
        if first_bad is None or f"{path}:{first_bad}:" not in str(exc):
            raise FuzzFailure(f"{path.name}: strict refusal {exc!s:.200} but first bad line is {first_bad}") from None
        return "strict_refused"
    except Exception as exc:
        raise _crash("load_items(strict)", exc, path) from exc
    if first_bad is not None:
        raise FuzzFailure(f"{path.name}: strict mode accepted a file with a bad line {first_bad}")
    return "ok"


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
