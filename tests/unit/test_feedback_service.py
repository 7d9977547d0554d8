"""FeedbackService and the gateway's two arms on a real in-process gRPC server (issue 21)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest

from tandem.canary import Arms
from tandem.feedback.store import FeedbackStore
from tandem.feedback.stream import JsonlFeedbackSink, replay_file
from tandem.retriever import Hit, Retriever
from tandem.search.catalog import InMemoryCatalog
from tandem.search.orchestrator import HybridSearcher
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.v1 import feedback_pb2, feedback_pb2_grpc, search_pb2, search_pb2_grpc
from tandem_services.app import gateway_server
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions

ITEMS = tiny_catalog()


class Reversed(Retriever):
    """The term-overlap ranking upside down: a candidate with other lists than current's."""

    name = "bm25"

    def __init__(self) -> None:
        self.inner = TermOverlapRetriever(ITEMS, name="bm25")

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        return [list(reversed(hits)) for hits in self.inner.retrieve(queries, k)]


class Broken(Retriever):
    name = "bm25"

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        raise ConnectionError("candidate model server unreachable")


def _searcher(r: Retriever) -> HybridSearcher:
    return HybridSearcher([r], catalog=InMemoryCatalog(ITEMS))


def _serve(candidate: Retriever | None, arms: Arms, sink=None) -> BackgroundServer:  # type: ignore[no-untyped-def]
    current = _searcher(TermOverlapRetriever(ITEMS, name="bm25"))
    cand = _searcher(candidate) if candidate is not None else None
    opts = ServerOptions(drain_s=0, grace_s=0)
    return BackgroundServer(lambda: gateway_server(current, opts, candidate=cand, arms=arms, feedback=sink))


def test_every_response_names_its_request_and_arm_and_the_share_routes_users() -> None:
    arms = Arms(share=0.0)
    with _serve(Reversed(), arms) as srv, grpc.insecure_channel(srv.address) as ch:
        stub = search_pb2_grpc.SearchServiceStub(ch)
        plain = stub.Search(search_pb2.SearchRequest(query="drill", user_id="u1"), timeout=5)
        assert plain.arm == "current" and len(plain.request_id) >= 16
        assert plain.hits and {h.arm for h in plain.hits} == {"current"}
        mine = stub.Search(search_pb2.SearchRequest(query="drill", request_id="r-42"), timeout=5)
        assert mine.request_id == "r-42"
        arms.set_plan(1.0, "split")
        cand = stub.Search(search_pb2.SearchRequest(query="drill", user_id="u1"), timeout=5)
        assert cand.arm == "candidate" and {h.arm for h in cand.hits} == {"candidate"}
        assert [h.item_id for h in cand.hits] != [h.item_id for h in plain.hits]
        arms.set_plan(1.0, "interleave")
        mixed = stub.Search(search_pb2.SearchRequest(query="drill", user_id="u1"), timeout=5)
        assert mixed.arm == "interleaved"
        ids = [h.item_id for h in mixed.hits]
        assert len(ids) == len(set(ids)) and {h.arm for h in mixed.hits} == {"current", "candidate"}
        assert any(k.startswith("candidate/") for k in mixed.versions)
    windows = arms.windows()
    assert windows["current"].requests == 3 and windows["candidate"].requests == 2


def test_a_failing_candidate_costs_no_request_and_counts_against_it() -> None:
    arms = Arms(share=1.0, mode="split")
    with _serve(Broken(), arms) as srv, grpc.insecure_channel(srv.address) as ch:
        stub = search_pb2_grpc.SearchServiceStub(ch)
        for mode in ("split", "interleave"):
            arms.set_plan(1.0, mode)
            reply = stub.Search(search_pb2.SearchRequest(query="drill"), timeout=5)
            assert reply.arm == "current" and reply.hits
    assert arms.windows()["candidate"].errors == 2


def _event(**kw) -> feedback_pb2.FeedbackEvent:  # type: ignore[no-untyped-def]
    base = {"request_id": "r1", "user_id": "u1", "item_id": "1", "kind": "click", "position": 1, "ts": time.time()}
    return feedback_pb2.FeedbackEvent(**{**base, **kw})


@pytest.mark.parametrize(("bad", "field"), [
    ({"kind": "like"}, "`events[1].kind`"),
    ({"request_id": ""}, "`events[1].request_id`"),
    ({"item_id": " "}, "`events[1].item_id`"),
    ({"position": 0}, "`events[1].position`"),
    ({"ts": 1.7e12}, "`events[1].ts`"),
    ({"arm": "control"}, "`events[1].arm`"),
])
def test_bad_feedback_is_invalid_argument_naming_the_field_and_nothing_is_recorded(
        tmp_path: Path, bad: dict, field: str) -> None:
    sink = JsonlFeedbackSink(tmp_path / "fb.jsonl")
    with _serve(None, Arms(), sink) as srv, grpc.insecure_channel(srv.address) as ch:
        stub = feedback_pb2_grpc.FeedbackServiceStub(ch)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Record(feedback_pb2.RecordRequest(events=[_event(), _event(**bad)]), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in caught.value.details()
    assert (tmp_path / "fb.jsonl").read_text() == ""


def test_feedback_is_labelled_with_the_served_arm_and_replays_once(tmp_path: Path) -> None:
    sink = JsonlFeedbackSink(tmp_path / "fb.jsonl")
    with _serve(Reversed(), Arms(share=1.0, mode="split"), sink) as srv, grpc.insecure_channel(srv.address) as ch:
        reply = search_pb2_grpc.SearchServiceStub(ch).Search(search_pb2.SearchRequest(query="drill"), timeout=5)
        hit = reply.hits[0]
        events = [_event(request_id=reply.request_id, item_id=hit.item_id, kind=k, arm="") for k in ("impression", "click")]
        stub = feedback_pb2_grpc.FeedbackServiceStub(ch)
        first = stub.Record(feedback_pb2.RecordRequest(events=events), timeout=5)
        again = stub.Record(feedback_pb2.RecordRequest(events=events), timeout=5)  # a client retry
    assert first.accepted == 2 and list(first.event_ids) == list(again.event_ids)
    with FeedbackStore(tmp_path / "fb.sqlite") as store:
        assert replay_file(tmp_path / "fb.jsonl", store) == (2, 2, 0)
        assert replay_file(tmp_path / "fb.jsonl", store) == (0, 4, 0)
        stored = [e for _, e in store.events()]
    assert {e.arm for e in stored} == {"candidate"} and {e.kind for e in stored} == {"impression", "click"}


def test_without_a_sink_feedback_is_unavailable() -> None:
    with _serve(None, Arms()) as srv, grpc.insecure_channel(srv.address) as ch:
        with pytest.raises(grpc.RpcError) as caught:
            feedback_pb2_grpc.FeedbackServiceStub(ch).Record(feedback_pb2.RecordRequest(events=[_event()]), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tandem_stream_feedback_replays_a_file_once(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tandem_app.cli import app
    from tandem.feedback.events import validate_feedback

    sink = JsonlFeedbackSink(tmp_path / "fb.jsonl")
    sink.send([validate_feedback({"request_id": "r", "item_id": "1", "kind": k, "position": 1}) for k in ("impression", "click")])
    sink.close()
    args = ["stream", "feedback", "--from-file", str(tmp_path / "fb.jsonl"), "--store", str(tmp_path / "s.sqlite")]
    first, second = CliRunner().invoke(app, args), CliRunner().invoke(app, args)
    assert first.exit_code == 0 and "added 2, duplicates 0" in first.output
    assert second.exit_code == 0 and "added 0, duplicates 2" in second.output
