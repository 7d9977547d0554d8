"""``tandem canary`` against a real in-process gateway, and the per-arm CTR the gateway's
FeedbackService counts (issue 21): counted once per request despite retries, in Prometheus
and in the windows the controller tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from tandem.canary import Arms
from tandem_app.cli import app
from tandem.feedback.stream import JsonlFeedbackSink
from tandem.retriever import Hit, Retriever
from tandem.search import HybridSearcher, InMemoryCatalog
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.v1 import feedback_pb2, feedback_pb2_grpc, search_pb2, search_pb2_grpc
from tandem_services.app import gateway_server
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions

ITEMS = tiny_catalog()


class Broken(Retriever):
    name = "bm25"

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        raise ConnectionError("candidate model server unreachable")


def _serve(candidate: Retriever | None, arms: Arms, sink=None) -> BackgroundServer:  # type: ignore[no-untyped-def]
    current = HybridSearcher([TermOverlapRetriever(ITEMS, name="bm25")], catalog=InMemoryCatalog(ITEMS))
    cand = HybridSearcher([candidate], catalog=InMemoryCatalog(ITEMS)) if candidate is not None else None
    return BackgroundServer(lambda: gateway_server(current, ServerOptions(drain_s=0, grace_s=0), candidate=cand,
                                                   arms=arms, feedback=sink))


def _search_and_click(ch: grpc.Channel, n: int, user: str, click_every: int = 2) -> list[str]:
    """``n`` searches with an impression each, a click on every ``click_every``-th; returns request ids."""
    search, feedback = search_pb2_grpc.SearchServiceStub(ch), feedback_pb2_grpc.FeedbackServiceStub(ch)
    rids = []
    for i in range(n):
        reply = search.Search(search_pb2.SearchRequest(query="drill", user_id=f"{user}{i}"), timeout=5)
        hit = reply.hits[0]
        kinds = ["impression"] + (["click"] if i % click_every == 0 else [])
        events = [feedback_pb2.FeedbackEvent(request_id=reply.request_id, user_id=f"{user}{i}", item_id=hit.item_id,
                                             kind=k, position=1, ts=time.time(), arm=hit.arm) for k in kinds]
        for _ in range(2):  # every call retried once: nothing may count twice
            feedback.Record(feedback_pb2.RecordRequest(events=events), timeout=5)
        rids.append(reply.request_id)
    return rids


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_ctr_per_arm_is_counted_once_per_request_in_prometheus_and_the_windows(tmp_path: Path) -> None:
    arms = Arms(share=0.0)
    before = {a: (_metric("tandem_arm_feedback_requests_total", arm=a),
                  _metric("tandem_arm_clicked_requests_total", arm=a)) for a in ("current", "candidate")}
    with _serve(TermOverlapRetriever(ITEMS, name="bm25"), arms, JsonlFeedbackSink(tmp_path / "fb.jsonl")) as srv, \
            grpc.insecure_channel(srv.address) as ch:
        _search_and_click(ch, 6, "a", click_every=2)  # current: 6 requests, 3 clicked
        arms.set_plan(1.0, "split")
        _search_and_click(ch, 4, "b", click_every=4)  # candidate: 4 requests, 1 clicked
        arms.set_plan(1.0, "interleave")
        _search_and_click(ch, 3, "c")  # interleaved: judged from the store, not counted here
    w = arms.windows()
    assert (w["current"].feedback_requests, w["current"].clicked_requests) == (6, 3)
    assert (w["candidate"].feedback_requests, w["candidate"].clicked_requests) == (4, 1)
    assert w["candidate"].ctr == 0.25
    for arm, (n, c) in {"current": (6, 3), "candidate": (4, 1)}.items():
        assert _metric("tandem_arm_feedback_requests_total", arm=arm) - before[arm][0] == n
        assert _metric("tandem_arm_clicked_requests_total", arm=arm) - before[arm][1] == c


def _invoke(*args: str) -> object:
    return CliRunner().invoke(app, ["canary", *args])


def test_status_and_set_change_the_gateway_plan_and_refuse_a_share_without_candidate() -> None:
    arms = Arms()
    with _serve(TermOverlapRetriever(ITEMS, name="bm25"), arms) as srv:
        r = _invoke("set", "--gateway", srv.address, "--share", "0.25", "--mode", "interleave")
        assert r.exit_code == 0, r.output
        assert (arms.share, arms.mode) == (0.25, "interleave")
        r = _invoke("status", "--gateway", srv.address)
        assert r.exit_code == 0 and "share=0.25 mode=interleave candidate=yes" in r.output, r.output
        r = _invoke("set", "--gateway", srv.address, "--share", "1.5")
        assert r.exit_code == 2 and "`share` must be in 0..1" in r.output
    with _serve(None, Arms()) as srv:
        r = _invoke("set", "--gateway", srv.address, "--share", "0.1")
        assert r.exit_code == 2 and "no candidate" in r.output, r.output


def _load(address: str, stop: threading.Event) -> None:
    with grpc.insecure_channel(address) as ch:
        n = 0
        while not stop.is_set():
            _search_and_click(ch, 1, f"load{n}-", click_every=1)
            n += 1


@pytest.mark.parametrize(("candidate", "exit_code", "last"), [
    (Broken(), 3, "rollback share=0: error rate"),
    (TermOverlapRetriever(ITEMS, name="bm25"), 0, "promoted share=1"),
])
def test_run_rolls_a_failing_candidate_back_and_promotes_a_sound_one(
        tmp_path: Path, candidate: Retriever, exit_code: int, last: str) -> None:
    arms, stop = Arms(), threading.Event()
    with _serve(candidate, arms, JsonlFeedbackSink(tmp_path / "fb.jsonl")) as srv:
        loader = threading.Thread(target=_load, args=(srv.address, stop), daemon=True)
        loader.start()
        try:
            r = _invoke("run", "--gateway", srv.address, "--mode", "split", "--stages", "0.5,1", "--min-requests",
                        "5", "--min-quality", "5", "--poll-s", "0.05", "--timeout-s", "20")
        finally:
            stop.set()
            loader.join(timeout=5)
    assert r.exit_code == exit_code, r.output
    assert r.output.strip().splitlines()[-1].startswith(last), r.output
    assert arms.share == (0.0 if exit_code else 1.0)


def test_run_needs_a_store_for_interleaving_and_names_bad_thresholds() -> None:
    r = _invoke("run", "--gateway", "localhost:1", "--mode", "interleave")
    assert r.exit_code == 2 and "--feedback-store" in r.output
    r = _invoke("run", "--gateway", "localhost:1", "--mode", "split", "--stages", "0.5,0.2")
    assert r.exit_code == 2 and "`stages`" in r.output


def test_serve_canary_parts_refuse_a_share_without_candidate_and_run_a_split_policy_in_process(
        tmp_path: Path) -> None:
    import typer

    from tandem_app.cli.canary import canary_parts

    none = {"policy_file": None, "feedback_kafka": False, "feedback_file": None}
    with pytest.raises(typer.BadParameter, match="need a candidate version"):
        canary_parts(None, share=0.1, mode="split", **none)
    with pytest.raises(typer.BadParameter, match="`share` must be in 0..1"):
        canary_parts(None, share=2.0, mode="split", **none)
    policy = tmp_path / "policy.json"
    policy.write_text('{"enabled": true, "mode": "interleave"}')
    with pytest.raises(typer.BadParameter, match="split"):
        canary_parts(lambda: object(), share=0.0, mode="split", **{**none, "policy_file": policy})
    policy.write_text('{"mode": "split", "stages": [0.2, 1.0], "min_requests": 1000}')
    parts = canary_parts(lambda: "cand", share=0.0, mode="split", poll_s=0.01,
                         **{**none, "policy_file": policy, "feedback_file": tmp_path / "fb.jsonl"})
    assert parts["candidate"] == "cand" and isinstance(parts["feedback"], JsonlFeedbackSink)
    deadline = time.monotonic() + 5
    while parts["arms"].share != 0.2 and time.monotonic() < deadline:  # the controller entered stage 1
        time.sleep(0.01)
    assert (parts["arms"].share, parts["arms"].mode) == (0.2, "split")
    parts["feedback"].close()
