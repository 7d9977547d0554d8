"""Catalog: the item schema, loaders and the item-event codec."""

from tandem.catalog.item import Item, normalize_text
from tandem.catalog.loaders import LoadResult, RowError, detect_format, load_items
from tandem.catalog.queries import read_qrels, read_queries

__all__ = [
    "Item",
    "LoadResult",
    "RowError",
    "detect_format",
    "load_items",
    "normalize_text",
    "read_qrels",
    "read_queries",
]
