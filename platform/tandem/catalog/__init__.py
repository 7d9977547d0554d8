"""Catalog: the item schema, loaders and the item-event codec."""

from tandem.catalog.item import Item, normalize_text

__all__ = ["Item", "normalize_text"]
