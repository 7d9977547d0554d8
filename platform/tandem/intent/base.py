"""The intent contract: :class:`Intent`, the :class:`IntentDecomposer` strategy and its default,
:class:`WholeQuery`.

A decomposer splits a query into sub-intents; the hybrid searcher retrieves each one
separately and weights it in fusion. An intent of kind :data:`FILTER_INTENT` constrains
instead of retrieving: it carries a typed :class:`~tandem.intent.filters.IntentFilter` that the
searcher applies after retrieval (:func:`tandem.search.catalog.intent_filters`).
Kept free of the searcher so decomposers (this package, the remote client) need only this.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from tandem.errors import InvalidInput
from tandem.intent.filters import IntentFilter

#: Kind of an :class:`Intent` that constrains instead of retrieving; it carries ``filter``.
FILTER_INTENT = "filter"


@dataclass(frozen=True, slots=True)
class Intent:
    """One sub-intent of a query; each is retrieved separately and weighted in fusion.

    An intent of kind :data:`FILTER_INTENT` carries its constraint in ``filter`` (required
    there, refused elsewhere); its ``text`` is then only the constraint's display form.
    """

    text: str
    kind: str = "query"
    weight: float = 1.0
    filter: IntentFilter | None = None

    def __post_init__(self) -> None:
        if (self.kind == FILTER_INTENT) != (self.filter is not None):
            raise InvalidInput(f"`filter` is required on an intent of kind {FILTER_INTENT!r} and only there "
                               f"(kind {self.kind!r}, filter {self.filter!r})")

    @classmethod
    def of_filter(cls, f: IntentFilter) -> Intent:
        """The ``filter`` intent for ``f``: weight 0 (it is not retrieved), text for display."""
        return cls(text=f.text(), kind=FILTER_INTENT, weight=0.0, filter=f)


class IntentDecomposer(ABC):
    """Splits a query into sub-intents (product type, attributes, use, audience, price)."""

    name: str = "intents"

    @abstractmethod
    def decompose(self, query: str) -> list[Intent]:
        """At least one intent for a non-empty, normalised query."""

    def version(self) -> str:
        """Identifier of the decomposer (part of cache keys)."""
        return self.name


class WholeQuery(IntentDecomposer):
    """The query itself as the single intent — the behaviour before intent decomposition."""

    name = "whole-query"

    def decompose(self, query: str) -> list[Intent]:
        """``[Intent(query)]``."""
        return [Intent(text=query)]


__all__ = ["FILTER_INTENT", "Intent", "IntentDecomposer", "IntentFilter", "WholeQuery"]
