"""Per-source circuit breakers in the hybrid searcher (issue 19 item 7): a source that failed
``breaker_failures`` times in a row is skipped, degraded ``circuit open``, for
``breaker_reset_s``, then probed; success closes the circuit."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from tandem.errors import InvalidInput
from tandem.retriever import Hit, Retriever
from tandem.search.breakers import SKIPPED, SourceBreakers
from tandem.search.orchestrator import HybridSearcher
from tandem.search.request import SearchConfig, SearchRequest
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog

ITEMS = tiny_catalog()


class Flaky(Retriever):
    """A generative source that is down until ``up`` is set, or slower than the deadline when ``slow``."""

    name = "generative"

    def __init__(self) -> None:
        self.calls = 0
        self.up = False
        self.slow = False
        self.inner = TermOverlapRetriever(ITEMS, name="generative")

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        self.calls += 1
        if self.slow:
            time.sleep(0.3)
        if not self.up:
            raise ConnectionError("model server unreachable")
        return self.inner.retrieve(queries, k)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _make(flaky: Flaky, failures: int = 3) -> tuple[HybridSearcher, Clock]:
    searcher = HybridSearcher([TermOverlapRetriever(ITEMS, name="bm25"), flaky],
                              config=SearchConfig(breaker_failures=failures, breaker_reset_s=5.0, deadline_s=0.1,
                                                  reserve_s=0.0))
    clock = Clock()
    searcher.breakers = SourceBreakers(["bm25", "generative"], failures, 5.0, clock=clock)
    return searcher, clock


def test_a_failing_source_is_skipped_after_n_failures_then_probed() -> None:
    flaky = Flaky()
    searcher, clock = _make(flaky)
    for _ in range(3):
        r = searcher.search(SearchRequest("cordless drill"))
        assert r.degraded and r.degraded_reasons[0].startswith("generative: ConnectionError")
    assert searcher.breakers.state("generative") == "open"
    skipped = SKIPPED.labels("generative")._value.get()
    for _ in range(5):  # open: not called at all, answered by BM25, degraded with the reason
        r = searcher.search(SearchRequest("cordless drill"))
        assert r.hits and r.degraded
        assert r.degraded_reasons == ["generative: circuit open (3 failures in a row; probed again within 5 s)"]
    assert flaky.calls == 3
    assert SKIPPED.labels("generative")._value.get() == skipped + 5
    clock.now += 5.0  # cool-down over: the next search probes; still down, so open again
    searcher.search(SearchRequest("cordless drill"))
    assert flaky.calls == 4 and searcher.breakers.state("generative") == "open"
    searcher.search(SearchRequest("cordless drill"))
    assert flaky.calls == 4
    flaky.up = True
    clock.now += 5.0
    r = searcher.search(SearchRequest("cordless drill"))
    assert flaky.calls == 5 and not r.degraded and searcher.breakers.state("generative") == "closed"
    assert any(s == "generative" for h in r.hits for s, _, _ in h.provenance)


def test_missed_deadlines_count_and_a_success_resets_the_count() -> None:
    flaky = Flaky()
    flaky.up, flaky.slow = True, True
    searcher, _ = _make(flaky, failures=2)
    searcher.search(SearchRequest("cordless drill"))
    flaky.slow = False
    assert not searcher.search(SearchRequest("cordless drill")).degraded  # one failure, then a success
    flaky.slow = True
    searcher.search(SearchRequest("cordless drill"))
    assert searcher.breakers.state("generative") == "closed"
    r = searcher.search(SearchRequest("cordless drill"))
    assert "no answer within the deadline" in r.degraded_reasons[0]
    assert searcher.breakers.state("generative") == "open"


def test_a_refused_request_is_not_a_source_failure() -> None:
    class Picky(Flaky):
        def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
            self.calls += 1
            raise InvalidInput("`queries[0]` is not allowed here")

    searcher, _ = _make(Picky(), failures=1)
    for _ in range(3):
        with pytest.raises(InvalidInput):
            searcher.search(SearchRequest("cordless drill"))
    assert searcher.breakers.state("generative") == "closed"


def test_breakers_off() -> None:
    flaky = Flaky()
    searcher = HybridSearcher([TermOverlapRetriever(ITEMS, name="bm25"), flaky],
                              config=SearchConfig(breaker_failures=0))
    for _ in range(8):
        searcher.search(SearchRequest("cordless drill"))
    assert flaky.calls == 8
    with pytest.raises(InvalidInput, match="failure_threshold"):
        SourceBreakers(["x"], -1)
