"""Item metadata for the query path and the filters it decides: :class:`ItemLookup` and its
implementations, filter matching, and the drop of hits the live catalog no longer knows.

A source may keep returning an item after it left the catalog: the generative model knows
every ID it was trained on until it is retrained, and a cached or lagging replica may too. The
searcher's catalog (the served index's stored fields; in the gateway the sparse service's
``Lookup``) is the truth about which items exist, so a fused hit it does not know is dropped
(:func:`known_hits`), before ``top_k`` is cut, and counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from prometheus_client import Counter

from tandem.catalog.item import Item
from tandem.errors import InvalidInput
from tandem.fusion import FusedHit
from tandem.intent.base import Intent
from tandem.search.request import FilterSpec, category_path

UNKNOWN_HITS = Counter(
    "tandem_search_unknown_hits_total",
    "Fused hits dropped because the live catalog no longer knows their item (deleted, quarantined), by source.",
    ["source"],
)


@dataclass(frozen=True, slots=True)
class ItemMeta:
    """What the query path needs to know about an item: its title and filterable fields."""

    title: str
    price: float | None = None
    category: tuple[str, ...] = ()
    brand: str | None = None


@runtime_checkable
class ItemLookup(Protocol):
    """Item metadata by id (titles for responses, fields for filters)."""

    def lookup(self, item_ids: Sequence[str]) -> Mapping[str, ItemMeta]:
        """Metadata of the known ids among ``item_ids`` (unknown ids are absent)."""


class InMemoryCatalog:
    """An :class:`ItemLookup` over items held in memory (the whole Home Depot set is ~10 MB)."""

    def __init__(self, items: Iterable[Item]) -> None:
        self._meta = {
            it.item_id: ItemMeta(title=it.title, price=it.price, category=tuple(it.category), brand=it.brand)
            for it in items
        }

    @classmethod
    def from_jsonl(cls, path: str) -> InMemoryCatalog:
        """Load ``Item`` records, one JSON object per line."""
        with open(path, encoding="utf-8") as fh:
            return cls(Item.model_validate_json(line) for line in fh if line.strip())

    def lookup(self, item_ids: Sequence[str]) -> Mapping[str, ItemMeta]:
        """See :meth:`ItemLookup.lookup`."""
        return {i: self._meta[i] for i in item_ids if i in self._meta}

    def __len__(self) -> int:
        return len(self._meta)


class StoredFieldsLookup:
    """An :class:`ItemLookup` over an index's stored documents (``SparseRetriever.documents``),
    so a server with a Lucene index needs no separate catalog file."""

    def __init__(self, source: Any) -> None:
        if not callable(getattr(source, "documents", None)):
            raise InvalidInput(f"`source` {type(source).__name__} has no `documents(item_ids)` method")
        self._source = source

    def lookup(self, item_ids: Sequence[str]) -> Mapping[str, ItemMeta]:
        """See :meth:`ItemLookup.lookup`."""
        out = {}
        for item_id, doc in self._source.documents(item_ids).items():
            category = doc.get("category") or ()
            if isinstance(category, str):  # the index stores the path joined by " > "
                category = [p.strip() for p in category.split(" > ")]
            try:
                price = float(doc["price"]) if doc.get("price") not in (None, "") else None
            except (TypeError, ValueError):
                price = None  # unparseable stored price: the item cannot satisfy a price filter
            out[item_id] = ItemMeta(title=doc.get("title", ""), price=price, category=tuple(category),
                                    brand=doc.get("brand"))
        return out


def matches(meta: ItemMeta | None, filters: Sequence[FilterSpec]) -> bool:
    """Whether an item with ``meta`` satisfies every filter (validated by
    :func:`~tandem.search.request.validate_request`); an unknown item (``None``) satisfies none."""
    if meta is None:  # an item we know nothing about cannot be shown to satisfy a filter
        return False
    for f in filters:
        if f.field == "price":
            if meta.price is None or (f.min is not None and meta.price < f.min) \
                    or (f.max is not None and meta.price > f.max):
                return False
        elif f.field == "category":
            want, have = category_path((f.prefix or "").split("/")).split("/"), category_path(meta.category).split("/")
            if have[: len(want)] != want:
                return False
        elif f.field == "brand":
            if (meta.brand or "").casefold() != (f.equals or "").strip().casefold():
                return False
    return True


def intent_filters(intents: Sequence[Intent]) -> list[FilterSpec]:
    """The request-level filters that the ``filter`` intents' typed constraints imply."""
    out = []
    for i in intents:
        f = i.filter  # set exactly on FILTER_INTENT intents (Intent checks it)
        if f is not None and (f.min_price is not None or f.max_price is not None):
            out.append(FilterSpec(field="price", min=f.min_price, max=f.max_price))
    return out


def known_hits(fused: Sequence[FusedHit], catalog: ItemLookup, want: int | None,
               reasons: list[str]) -> tuple[list[FusedHit], dict[str, ItemMeta]]:
    """The hits of ``fused`` whose item ``catalog`` knows, in order, and their metadata.

    ``want``: stop once that many known hits are found (``None``: check them all, as filters
    need every candidate's fields). Looks items up in rounds of the hits still missing, so a
    search without retired items costs one lookup of ``want`` ids.

    When the catalog cannot answer, the hits not yet checked are kept unchecked (showing a
    possibly retired item beats answering nothing) and the reason is added to ``reasons``,
    which marks the result degraded.
    """
    kept: list[FusedHit] = []
    meta: dict[str, ItemMeta] = {}
    start = 0
    while start < len(fused) and (want is None or len(kept) < want):
        end = len(fused) if want is None else start + (want - len(kept))
        batch = fused[start:end]
        try:
            found: Mapping[str, ItemMeta] = catalog.lookup([h.item_id for h in batch])
        except Exception as exc:  # noqa: BLE001 - a catalog outage degrades, it does not fail the search
            reasons.append(f"catalog: {type(exc).__name__}: {exc}"[:300])
            return kept + list(fused[start:]), meta
        for h in batch:
            m = found.get(h.item_id)
            if m is None:
                for source in {e.source for e in h.provenance} or {"unknown"}:
                    UNKNOWN_HITS.labels(source).inc()
                continue
            meta[h.item_id] = m
            kept.append(h)
        start = end
    return kept, meta


__all__ = ["UNKNOWN_HITS", "InMemoryCatalog", "ItemLookup", "ItemMeta", "StoredFieldsLookup", "intent_filters",
           "known_hits", "matches"]
