"""The intent contract: :class:`Intent`, the :class:`IntentDecomposer` strategy and its default,
:class:`WholeQuery`.

A decomposer splits a query into sub-intents; the hybrid searcher retrieves each one
separately and weights it in fusion. An intent of kind :data:`FILTER_INTENT` constrains
instead of retrieving (the searcher reads it with :func:`tandem.search.catalog.intent_filters`).
Kept free of the searcher so decomposers (this package, the remote client) need only this.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

#: Kind of an :class:`Intent` that constrains instead of retrieving: text ``price>=A price<=B``.
FILTER_INTENT = "filter"


@dataclass(frozen=True, slots=True)
class Intent:
    """One sub-intent of a query; each is retrieved separately and weighted in fusion."""

    text: str
    kind: str = "query"
    weight: float = 1.0


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


__all__ = ["FILTER_INTENT", "Intent", "IntentDecomposer", "WholeQuery"]
