"""The fusion interface: many ranked lists (per source and per intent) in, one ranking out.

Fusion is a strategy of :class:`tandem.search.HybridSearcher`; RRF is the default, learned
fusion plugs in behind the same interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tandem.retriever import Hit


@dataclass(frozen=True, slots=True)
class RankedList:
    """One source's ranked hits for one intent of the query."""

    source: str
    hits: Sequence[Hit]
    intent: str = ""
    intent_weight: float = 1.0
    #: The sub-intent's kind (``query`` = the whole query, ``product_type``, ``brand``...).
    intent_kind: str = "query"


#: Per-item scores a source gave for candidates it may not have retrieved itself
#: (:meth:`tandem.retriever.Retriever.score_items`): ``{item_id: {score name: value}}``.
ItemScores = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True, slots=True)
class Evidence:
    """How one source ranked an item: 1-based rank (best over intents) and its own score."""

    source: str
    rank: int
    score: float


@dataclass(frozen=True, slots=True)
class FusedHit:
    """One item of the fused ranking with the per-source evidence that put it there."""

    item_id: str
    score: float
    provenance: tuple[Evidence, ...]


class Fuser(ABC):
    """Merges ranked lists into one ranking."""

    #: Short name, reported in versions and cache keys.
    name: str = "fuser"
    #: Item scores this fuser uses (:data:`ItemScores` names); the searcher asks the sources
    #: that give them for every candidate. Empty: ranks from the lists alone.
    score_names: tuple[str, ...] = ()

    @abstractmethod
    def fuse(self, lists: Sequence[RankedList], k: int, item_scores: ItemScores | None = None) -> list[FusedHit]:
        """Return at most ``k`` fused hits, best first. ``item_scores``: item scores of the
        candidates (see :attr:`score_names`; an item or a name may be missing).

        Contract: item ids are unique; every hit's provenance names each source that
        returned the item exactly once, with its best rank; ties break deterministically.
        """

    def version(self) -> str:
        """Identifier of the fusion parameters (part of cache keys: changing them changes results)."""
        return self.name
