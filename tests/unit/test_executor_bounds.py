"""Server worker pools: a bounded backlog, and work whose budget passed in the queue is not run."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import grpc
import pytest

from tandem.retriever import Hit
from tandem.search.orchestrator import HybridSearcher
from tandem.search.request import SearchConfig
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.v1 import search_pb2, search_pb2_grpc
from tandem_services.app import gateway_server
from tandem_services.executors import BoundedExecutor, DeadlinePassed, Overloaded, within_budget
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions


def test_a_full_backlog_refuses_at_once_and_frees_its_slots() -> None:
    pool = BoundedExecutor(1, "test", max_queue=1)
    gate = threading.Event()
    try:
        running = pool.submit(gate.wait)
        queued = pool.submit(lambda: "queued")
        with pytest.raises(Overloaded, match="1 calls already wait"):
            pool.submit(lambda: "refused")
        assert queued.cancel()  # a cancelled call gives its slot back...
        extra = pool.submit(lambda: "extra")
        gate.set()
        assert running.result(5) and extra.result(5) == "extra"  # ...and so does a finished one
        assert pool.submit(lambda: 1).result(5) == 1
    finally:
        gate.set()
        pool.shutdown()


def test_a_call_gets_its_budget_less_the_wait_and_none_once_spent() -> None:
    seen: list[float | None] = []
    call = within_budget(lambda left: seen.append(left), 0.5)
    time.sleep(0.1)
    call()
    assert seen[0] is not None and 0.3 < seen[0] < 0.41
    late = within_budget(lambda left: seen.append(left), 0.05, "the search")
    time.sleep(0.06)
    with pytest.raises(DeadlinePassed, match="the search waited .* too much of its 50 ms budget; it was not run"):
        late()
    assert len(seen) == 1
    within_budget(lambda left: seen.append(left), None)()
    assert seen[-1] is None


class _Counting(TermOverlapRetriever):
    def __init__(self) -> None:
        super().__init__(tiny_catalog(), name="bm25", delay_s=0.5)
        self.calls = 0

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        self.calls += 1
        return super().retrieve(queries, k)


def test_searches_that_waited_out_the_gateway_budget_are_not_run() -> None:
    """Clients without a deadline get the gateway's budget (0.3 s here); one worker, four
    concurrent searches, each holding the worker for about the budget: only the first may reach
    the retriever; the others, picked up with (almost) nothing left, are not run."""
    slow = _Counting()
    searcher = HybridSearcher([slow], config=SearchConfig(deadline_s=0.3))
    opts = ServerOptions(drain_s=0, grace_s=0.5)
    with BackgroundServer(lambda: gateway_server(searcher, opts, workers=1)) as srv:
        with grpc.insecure_channel(srv.address) as ch:
            stub = search_pb2_grpc.SearchServiceStub(ch)
            with pytest.raises(grpc.RpcError):  # alone: the retriever calls one search makes
                stub.Search(search_pb2.SearchRequest(query="drill"), timeout=10)
            one = slow.calls
            calls = [stub.Search.future(search_pb2.SearchRequest(query=f"drill {i}")) for i in range(4)]
            codes = []
            for c in calls:
                try:
                    c.result(timeout=10)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())
    assert codes.count(grpc.StatusCode.DEADLINE_EXCEEDED) == 3, codes
    assert slow.calls == 2 * one, (slow.calls, one, codes)
