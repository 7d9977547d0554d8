"""The retriever interface every search source implements (sparse, generative, remote).

The hybrid orchestrator, the gRPC services and ``tandem eval`` are written against this
interface only; a contract test suite (``tandem_testing.retriever_contract.RetrieverContract``) runs against
every implementation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from tandem.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved item: its id, the source's score (higher is better) and the source name."""

    item_id: str
    score: float
    source: str


class Retriever(ABC):
    """A source of ranked items for text queries."""

    #: Short name used as ``Hit.source`` and in provenance (``bm25``, ``generative``...).
    name: str = "retriever"

    @abstractmethod
    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Return, for each query in order, at most ``k`` hits sorted by descending score.

        Contract: ``len(result) == len(queries)``; item ids are unique within one list;
        every hit's ``source`` is :attr:`name`; a query that matches nothing gets ``[]``.
        Raises :class:`~tandem.errors.InvalidInput` for ``k < 1`` or an empty/blank query.
        """

    def version(self) -> str:
        """Identifier of the data/model this retriever serves (part of cache keys).

        Called on every search, from any thread and on event loops: it must be cheap, safe
        without locks, and never block (return a stored value; refresh it elsewhere).
        """
        return "0"

    def refresh(self) -> bool:
        """Pick up newer data or a newer model in place, when there is one; ``True`` when what
        is served changed (and with it :meth:`version`).

        A declared capability, see :attr:`refreshable`: the Admin ``Reload`` RPC and
        :meth:`tandem.search.HybridSearcher.reload` call it on every source that declares it,
        and on no other. It must not interrupt searches in flight, and a bad new artifact is
        logged and skipped (the current data keeps serving), not raised.

        The base has nothing to refresh. Sources written before this method existed named it
        ``reload()``; such a method is still honoured (and counts as declaring the capability).
        """
        legacy = getattr(self, "reload", None)
        return bool(legacy()) if callable(legacy) else False

    @property
    def refreshable(self) -> bool:
        """Whether this source can :meth:`refresh`: it overrides it (or defines the older ``reload``)."""
        cls = type(self)
        return cls.refresh is not Retriever.refresh or callable(getattr(cls, "reload", None))

    #: Names of the per-item scores :meth:`score_items` returns, in order; empty (the
    #: default) declares that this source cannot score items it did not retrieve.
    score_names: tuple[str, ...] = ()

    def score_items(self, query: str, item_ids: Sequence[str]) -> list[tuple[float, ...] | None]:
        """This source's scores of *any* items for ``query`` (one batched call), e.g. the
        generative model's log-probability of each item's ID: features for fusion of
        candidates that other sources found.

        Contract: one entry per item id, in order: a tuple in :attr:`score_names` order, or
        ``None`` for an item this source does not know. Raises :class:`InvalidInput` for a
        blank query or more than :data:`MAX_SCORED_ITEMS` ids; a source without
        :attr:`score_names` raises :class:`NotImplementedError`.
        """
        raise NotImplementedError(f"source {self.name!r} does not score items")

    def close(self) -> None:  # noqa: B027 (optional hook: most retrievers hold nothing to release)
        """Release resources (JVM searchers, GPU memory). Idempotent."""


def validate_queries(queries: Sequence[str], k: int) -> None:
    """Shared argument checks of :meth:`Retriever.retrieve` implementations."""
    if isinstance(queries, str):
        raise InvalidInput("`queries` must be a sequence of strings, not one string")
    if k < 1:
        raise InvalidInput(f"`k` must be >= 1, got {k}")
    for i, q in enumerate(queries):
        if not isinstance(q, str) or not q.strip():
            raise InvalidInput(f"`queries[{i}]` is empty; a query needs at least one non-space character")


#: Items one :meth:`Retriever.score_items` call may score (the fused candidates of one query).
MAX_SCORED_ITEMS = 1000


def validate_scoring(query: str, item_ids: Sequence[str]) -> None:
    """Shared argument checks of :meth:`Retriever.score_items` implementations."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("`query` is empty; scoring needs at least one non-space character")
    if isinstance(item_ids, str):
        raise InvalidInput("`item_ids` must be a sequence of strings, not one string")
    if len(item_ids) > MAX_SCORED_ITEMS:
        raise InvalidInput(f"`item_ids` holds {len(item_ids)} ids; at most {MAX_SCORED_ITEMS} per call")


def refresh_sources(sources: Sequence[Retriever], names: Sequence[str] = ()) -> list[str]:
    """:meth:`Retriever.refresh` every :attr:`~Retriever.refreshable` source named in ``names``
    (all when empty), in order; returns the names refreshed. What the Admin ``Reload`` runs."""
    done = []
    for r in sources:
        if (not names or r.name in names) and r.refreshable:
            r.refresh()
            done.append(r.name)
    return done
