"""The contract every :class:`~tandem.retriever.Retriever` must satisfy, as a reusable test suite.

Subclass :class:`RetrieverContract` in a test module, provide a ``retriever`` fixture over
a small fixed corpus, and set :attr:`RetrieverContract.EXPECTED` to a few queries with an
item each must return in its top :attr:`RetrieverContract.K`::

    class TestBm25Contract(RetrieverContract):
        EXPECTED = {"cordless drill": "d1", "garden hose": "h1"}

        @pytest.fixture
        def retriever(self, tmp_path):
            ...

A retriever that always returns something (a generative decoder has no notion of "no
match") sets :attr:`NO_MATCH_QUERY` to ``None``, which skips that one check.
"""

from __future__ import annotations

from typing import ClassVar

import pytest

from tandem.errors import InvalidInput
from tandem.retriever import Retriever


class RetrieverContract:
    """Checks of :meth:`Retriever.retrieve`'s documented contract (pytest collects ``test_*``)."""

    #: query → an item id that must be among its top :attr:`K` hits.
    EXPECTED: ClassVar[dict[str, str]] = {}
    #: A query that matches nothing in the corpus (``None``: the retriever always answers).
    NO_MATCH_QUERY: ClassVar[str | None] = "qxzvw jjkqq"
    K: ClassVar[int] = 5

    def _queries(self) -> list[str]:
        assert self.EXPECTED, "set EXPECTED on the RetrieverContract subclass"
        return list(self.EXPECTED)

    def test_one_result_list_per_query_in_order(self, retriever: Retriever) -> None:
        queries = self._queries()
        results = retriever.retrieve(queries, self.K)
        assert len(results) == len(queries)
        for query, hits in zip(queries, results):
            assert self.EXPECTED[query] in [h.item_id for h in hits], (query, hits)
        # Reversing the batch reverses the answers: results follow the query order.
        reversed_results = retriever.retrieve(queries[::-1], self.K)
        assert [[h.item_id for h in r] for r in reversed_results] == [[h.item_id for h in r] for r in results[::-1]]

    def test_batch_equals_single_queries(self, retriever: Retriever) -> None:
        queries = self._queries()
        batch = retriever.retrieve(queries, self.K)
        single = [retriever.retrieve([q], self.K)[0] for q in queries]
        assert [[h.item_id for h in r] for r in batch] == [[h.item_id for h in r] for r in single]

    @pytest.mark.parametrize("k", [1, 2, 3])
    def test_at_most_k_hits(self, retriever: Retriever, k: int) -> None:
        for hits in retriever.retrieve(self._queries(), k):
            assert 1 <= len(hits) <= k

    def test_sorted_by_descending_score(self, retriever: Retriever) -> None:
        for hits in retriever.retrieve(self._queries(), self.K):
            scores = [h.score for h in hits]
            assert scores == sorted(scores, reverse=True)

    def test_unique_ids_within_a_list(self, retriever: Retriever) -> None:
        for hits in retriever.retrieve(self._queries(), self.K):
            ids = [h.item_id for h in hits]
            assert len(ids) == len(set(ids))

    def test_source_is_retriever_name(self, retriever: Retriever) -> None:
        for hits in retriever.retrieve(self._queries(), self.K):
            assert hits and {h.source for h in hits} == {retriever.name}

    @pytest.mark.parametrize("bad", ["", "   ", "\t\n"])
    def test_blank_query_is_invalid_input(self, retriever: Retriever, bad: str) -> None:
        with pytest.raises(InvalidInput, match="queries"):
            retriever.retrieve([self._queries()[0], bad], self.K)

    @pytest.mark.parametrize("k", [0, -1])
    def test_k_below_one_is_invalid_input(self, retriever: Retriever, k: int) -> None:
        with pytest.raises(InvalidInput, match="`k`"):
            retriever.retrieve(self._queries(), k)

    def test_a_bare_string_is_invalid_input(self, retriever: Retriever) -> None:
        with pytest.raises(InvalidInput, match="queries"):
            retriever.retrieve(self._queries()[0], self.K)  # type: ignore[arg-type]

    def test_empty_batch_gives_empty_result(self, retriever: Retriever) -> None:
        assert retriever.retrieve([], self.K) == []

    def test_no_match_query_returns_empty_list(self, retriever: Retriever) -> None:
        if self.NO_MATCH_QUERY is None:
            pytest.skip("this retriever always answers; no-match does not apply")
        results = retriever.retrieve([self._queries()[0], self.NO_MATCH_QUERY], self.K)
        assert results[0] and results[1] == []

    def test_version_is_a_string(self, retriever: Retriever) -> None:
        assert isinstance(retriever.version(), str) and retriever.version()
