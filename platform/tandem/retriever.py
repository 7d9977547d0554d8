"""The retriever interface every search source implements (sparse, generative, remote).

The hybrid orchestrator, the gRPC services and ``tandem eval`` are written against this
interface only; a contract test suite (``tandem.testing.retriever_contract.RetrieverContract``) runs against
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

    def close(self) -> None:
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
