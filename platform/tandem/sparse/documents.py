"""Mapping between catalog items and the Anserini JSON documents the index stores."""

from __future__ import annotations

import json
from typing import Any

from tandem.catalog.item import Item


def to_document(item: Item) -> dict[str, Any]:
    """Anserini ``JsonCollection`` document for ``item``.

    ``contents`` is all of the item's text (the default search field); each item field is a
    separate Lucene field for boosted multi-field search. ``version`` and ``price`` travel
    in the stored raw JSON only (they are not among the indexed fields).
    """
    doc: dict[str, Any] = {"id": item.item_id, "contents": item.text(), "title": item.title}
    if item.brand:
        doc["brand"] = item.brand
    if item.category:
        doc["category"] = " > ".join(item.category)
    if item.attributes:
        doc["attributes"] = "; ".join(f"{k}: {v}" for k, v in item.attributes.items())
    if item.description:
        doc["description"] = item.description
    if item.price is not None:
        doc["price"] = str(item.price)
    doc["version"] = str(item.version)
    return doc


def to_json_line(item: Item) -> str:
    """:func:`to_document` serialised as one JSON line."""
    return json.dumps(to_document(item), ensure_ascii=False)
