"""Serving follows the index: a read-only BM25 service picks up the ingest writer's commits by
itself (within about ``follow_s``) and on the Admin ``Reload`` RPC — upserts and deletes both."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from tandem.catalog.item import Item
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.v1 import admin_pb2, admin_pb2_grpc
from tandem_services.app import load_sparse, retriever_server
from tandem_services.client import RemoteRetriever
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions

pytestmark = pytest.mark.integration

FAST = ServerOptions(drain_s=0.0, grace_s=1.0)


@pytest.fixture
def index_dir(tmp_path: Path, java_home: object) -> Path:
    from tandem.sparse import build_index

    build_index(tiny_catalog(), tmp_path / "index")
    return tmp_path / "index"


def _until(check: Callable[[], bool], timeout_s: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if check():
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


def _ids(remote: RemoteRetriever, query: str) -> list[str]:
    return [h.item_id for h in remote.retrieve([query], 5)[0]]


def test_the_sparse_service_follows_the_writers_commits(index_dir: Path) -> None:
    from tandem.sparse import SparseRetriever

    with SparseRetriever(index_dir) as writer, BackgroundServer(
        lambda: retriever_server([load_sparse(str(index_dir), follow_s=0.1)], FAST)
    ) as srv:
        remote = RemoteRetriever(srv.address, "bm25", timeout_s=5)
        try:
            assert _ids(remote, "wombat") == []
            writer.upsert([Item(item_id="w1", title="Wombat Gutter Guard")])
            seen = _until(lambda: _ids(remote, "wombat") == ["w1"], 5)
            assert seen is not None and seen < 1.0, seen
            writer.delete(["w1"])
            gone = _until(lambda: _ids(remote, "wombat") == [], 5)
            assert gone is not None and gone < 1.0, gone
        finally:
            remote.close()


def test_admin_reload_refreshes_the_sparse_index(index_dir: Path) -> None:
    from tandem.sparse import SparseRetriever

    with SparseRetriever(index_dir) as writer, BackgroundServer(
        lambda: retriever_server([load_sparse(str(index_dir), follow_s=None)], FAST)
    ) as srv:
        remote = RemoteRetriever(srv.address, "bm25", timeout_s=5)
        try:
            writer.upsert([Item(item_id="w2", title="Quokka Wheelbarrow")])
            time.sleep(0.3)
            assert _ids(remote, "quokka") == []  # not following: the old commit is served
            with grpc.insecure_channel(srv.address) as ch:
                reply = admin_pb2_grpc.AdminServiceStub(ch).Reload(admin_pb2.ReloadRequest(), timeout=10)
            assert list(reply.reloaded) == ["bm25"]
            assert _ids(remote, "quokka") == ["w2"]
        finally:
            remote.close()
