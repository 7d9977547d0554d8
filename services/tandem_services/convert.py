"""Protobuf ↔ core conversions (the only place that knows both shapes)."""

from __future__ import annotations

from tandem.errors import InvalidInput
from tandem.intent.base import FILTER_INTENT, Intent
from tandem.intent.filters import IntentFilter
from tandem.search.catalog import ItemMeta
from tandem.search.request import FilterSpec, SearchRequest
from tandem.search.results import SearchResult
from tandem.v1 import retriever_pb2, search_pb2


def filter_from_proto(f: search_pb2.Filter) -> FilterSpec:
    """A proto filter as a :class:`FilterSpec`; validation happens in the core."""
    which = f.WhichOneof("condition")
    if which == "range":
        return FilterSpec(
            field=f.field,
            min=f.range.min if f.range.HasField("min") else None,
            max=f.range.max if f.range.HasField("max") else None,
        )
    if which == "prefix":
        return FilterSpec(field=f.field, prefix=f.prefix)
    if which == "equals":
        return FilterSpec(field=f.field, equals=f.equals)
    return FilterSpec(field=f.field)


def request_from_proto(req: search_pb2.SearchRequest) -> SearchRequest:
    """The core request for a proto request."""
    return SearchRequest(
        query=req.query,
        top_k=req.top_k if req.HasField("top_k") else None,
        filters=tuple(filter_from_proto(f) for f in req.filters),
        user_id=req.user_id,
        debug=req.debug,
    )


def filter_to_proto(f: FilterSpec) -> search_pb2.Filter:
    """Inverse of :func:`filter_from_proto` (used by the client)."""
    if f.min is not None or f.max is not None:
        return search_pb2.Filter(field=f.field, range=search_pb2.Range(min=f.min, max=f.max))
    if f.prefix is not None:
        return search_pb2.Filter(field=f.field, prefix=f.prefix)
    if f.equals is not None:
        return search_pb2.Filter(field=f.field, equals=f.equals)
    return search_pb2.Filter(field=f.field)


def intent_filter_to_proto(f: IntentFilter) -> search_pb2.IntentFilter:
    """Proto form of an intent's typed constraint (absent bounds stay unset)."""
    return search_pb2.IntentFilter(min_price=f.min_price, max_price=f.max_price)


def intent_to_proto(i: Intent) -> search_pb2.Intent:
    """Proto form of a core intent."""
    if i.filter is None:
        return search_pb2.Intent(text=i.text, kind=i.kind, weight=i.weight)
    return search_pb2.Intent(text=i.text, kind=i.kind, weight=i.weight, filter=intent_filter_to_proto(i.filter))


def intent_from_proto(i: search_pb2.Intent, where: str = "intent") -> Intent:
    """The core intent for a proto one, checked: bad values raise :class:`InvalidInput` naming the
    field under ``where`` (``intents[3].filter.max_price``).

    A ``filter`` intent without its typed ``filter`` (a server from before the field) is refused
    rather than its text parsed: text is display only.
    """
    f = None
    if i.HasField("filter"):
        m = i.filter
        try:
            f = IntentFilter(min_price=m.min_price if m.HasField("min_price") else None,
                             max_price=m.max_price if m.HasField("max_price") else None)
        except InvalidInput as exc:
            raise InvalidInput(str(exc).replace("`filter", f"`{where}.filter")) from None
    elif i.kind == FILTER_INTENT:
        raise InvalidInput(f"`{where}.filter` is missing on an intent of kind {FILTER_INTENT!r} "
                           f"(text {i.text[:80]!r}); a sender older than typed intent filters?")
    try:
        return Intent(text=i.text, kind=i.kind, weight=i.weight, filter=f)
    except InvalidInput as exc:
        raise InvalidInput(f"`{where}`: {exc}") from None


def result_to_proto(r: SearchResult) -> search_pb2.SearchResponse:
    """The proto response for a core result.

    Built with ``add()`` on the repeated fields rather than nested constructors: those copy
    every sub-message once more, and this runs for every response (about 40 % less time).
    """
    resp = search_pb2.SearchResponse(degraded=r.degraded, degraded_reasons=r.degraded_reasons, versions=r.versions,
                                     cache_hit=r.cache_hit, took_ms=r.took_ms)
    add_hit = resp.hits.add
    for h in r.hits:
        add_evidence = add_hit(item_id=h.item_id, score=h.score, title=h.title).provenance.add
        for source, rank, score in h.provenance:
            add_evidence(source=source, rank=rank, score=score)
    add_intent = resp.intents.add
    for i in r.intents:
        if i.filter is None:
            add_intent(text=i.text, kind=i.kind, weight=i.weight)
        else:
            add_intent(text=i.text, kind=i.kind, weight=i.weight, filter=intent_filter_to_proto(i.filter))
    add_list = resp.debug_lists.add
    for source, intent, hits in r.debug_lists:
        add_source_hit = add_list(source=source, intent=intent).hits.add
        for n, (item, score) in enumerate(hits, 1):
            add_source_hit(item_id=item, rank=n, score=score)
    return resp


def meta_to_proto(item_id: str, m: ItemMeta) -> retriever_pb2.StoredItem:
    """The ``Lookup`` answer for one item's metadata."""
    return retriever_pb2.StoredItem(item_id=item_id, title=m.title, price=m.price, category=list(m.category),
                                    brand=m.brand)


def meta_from_proto(s: retriever_pb2.StoredItem) -> ItemMeta:
    """Inverse of :func:`meta_to_proto`."""
    return ItemMeta(title=s.title, price=s.price if s.HasField("price") else None, category=tuple(s.category),
                    brand=s.brand if s.HasField("brand") else None)
