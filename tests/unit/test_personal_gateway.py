"""Personalisation through the gateway (issue 22 item 1): a searcher built from a
``SearcherSpec(personal=...)`` behind ``gateway_server`` re-ranks a request whose user has a
profile, answers requests without a user or profile exactly like a plain searcher, and hands
failed searches to the failed-search emitter and every search to the request log."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import pytest
from typer.testing import CliRunner

from tandem_app.cli import app
from tandem.personal import ItemVectors, MemoryProfileStore, UserProfile
from tandem.personal.profile import ProfileConfig
from tandem.personal.serving import PersonalSpec, save_weights
from tandem.search import InMemoryCatalog, SearchRequest
from tandem.search.build import SearcherSpec, build_searcher
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.v1 import search_pb2, search_pb2_grpc
from tandem_services.app import gateway_server
from tandem_services.learning import FailedSearchEmitter, RequestLogEmitter
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions

ITEMS = tiny_catalog()
BRANDS = sorted({it.brand for it in ITEMS})
QUERY = "cordless drill saw"


def _vectors() -> ItemVectors:
    """One direction per brand; the brand is the top ID level."""
    b = [BRANDS.index(it.brand) for it in ITEMS]
    return ItemVectors([it.item_id for it in ITEMS], np.eye(len(BRANDS), dtype=np.float32)[b],
                       np.array([[x, n % 3, 0] for n, x in enumerate(b)]))


def _store(vectors: ItemVectors) -> MemoryProfileStore:
    store, cfg, now = MemoryProfileStore(), ProfileConfig(), time.time()
    profile = UserProfile.empty(vectors.dim)
    for n, item in enumerate(("t06", "t08")):  # a Sawtooth fan
        profile.add(f"e{n}", vectors.vector(item), vectors.code(item), 1.0, now, cfg)
    store.put("saw-fan", profile)
    return store


class Publisher:
    def __init__(self) -> None:
        self.records: list = []

    def send(self, records: Sequence) -> None:
        self.records.extend(records)


def _ids(reply: search_pb2.SearchResponse) -> list[tuple[str, float]]:
    return [(h.item_id, round(h.score, 6)) for h in reply.hits]


def test_gateway_personalises_known_users_only_and_emits_failed_searches() -> None:
    vectors = _vectors()
    spec: dict[str, Any] = {"sources": [TermOverlapRetriever(ITEMS, name="bm25")], "catalog": InMemoryCatalog(ITEMS),
                            "fusion": "rrf"}
    plain = build_searcher(SearcherSpec(**spec))
    personal = build_searcher(SearcherSpec(**spec, personal=PersonalSpec(store=_store(vectors), vectors=vectors)))
    emitter, requests = FailedSearchEmitter(Publisher(), batch=1), RequestLogEmitter(Publisher(), batch=1)
    with BackgroundServer(lambda: gateway_server(personal, ServerOptions(drain_s=0, grace_s=0),
                                                 observers=[emitter, requests])) as srv, \
            grpc.insecure_channel(srv.address) as ch:
        stub = search_pb2_grpc.SearchServiceStub(ch)
        expected = _ids(plain.search(SearchRequest(query=QUERY, top_k=5)))
        anonymous = stub.Search(search_pb2.SearchRequest(query=QUERY, top_k=5), timeout=5)
        unknown = stub.Search(search_pb2.SearchRequest(query=QUERY, top_k=5, user_id="nobody"), timeout=5)
        fan = stub.Search(search_pb2.SearchRequest(query=QUERY, top_k=5, user_id="saw-fan"), timeout=5)
        missing = stub.Search(search_pb2.SearchRequest(query="zzzz qqqq", top_k=5, user_id="saw-fan"), timeout=5)
    assert _ids(anonymous) == expected and _ids(unknown) == expected  # no profile: today's ranking
    assert not anonymous.degraded and not unknown.degraded and not fan.degraded
    top = {it.item_id: it.brand for it in ITEMS}
    assert [h.item_id for h in fan.hits] != [h.item_id for h in anonymous.hits]
    assert top[fan.hits[0].item_id] == "Sawtooth" and top[anonymous.hits[0].item_id] != "Sawtooth"
    assert len(missing.hits) == 0
    deadline = time.monotonic() + 5
    while (not emitter.publisher.records or len(requests.publisher.records) < 4) and time.monotonic() < deadline:
        time.sleep(0.02)
    logged = {r.request_id: r for r in requests.publisher.records}  # the request log: id -> query, ranked ids
    assert logged[fan.request_id].query == QUERY and logged[fan.request_id].user_id == "saw-fan"
    assert list(logged[fan.request_id].item_ids) == [h.item_id for h in fan.hits]
    assert logged[missing.request_id].item_ids == ()
    assert [(r.request_id, r.reason, r.query) for r in emitter.publisher.records] == [
        (missing.request_id, "zero_hits", "zzzz qqqq")]


@pytest.mark.parametrize(("args", "message"), [
    (["--profiles-redis-url", "redis://x:1/0"], "need --profiles-model"),
    (["--profiles-model", "/nonexistent"], "decoder.safetensors"),
])
def test_serve_gateway_refuses_bad_profile_options(args: list[str], message: str) -> None:
    r = CliRunner().invoke(app, ["serve", "gateway", "--sparse", "127.0.0.1:1", "--port", "0", *args])
    assert r.exit_code == 2 and message in r.output, r.output


def test_weights_file_round_trips_and_names_a_bad_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tandem.errors import CorruptArtifact
    from tandem.personal.serving import load_weights

    save_weights(tmp_path / "w.json", {"profile_prefix1": 0.7}, 50, {"sessions": 3})
    assert load_weights(tmp_path / "w.json") == ({"profile_prefix1": 0.7}, 50)
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(CorruptArtifact, match="tandem.personal.weights/1"):
        load_weights(tmp_path / "bad.json")
