"""Roles on a real in-process gateway: client tokens search, admin tokens also administer and
debug; token files are re-read when they change; URL credentials never reach errors or logs."""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tandem.errors import Unavailable
from tandem.search.orchestrator import HybridSearcher
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.v1 import admin_pb2, admin_pb2_grpc, retriever_pb2, retriever_pb2_grpc, search_pb2, search_pb2_grpc
from tandem_services.app import gateway_server, retriever_server
from tandem_services.logs import JsonFormatter
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions
from tandem_services.tokens import TokenSet, redact

CLIENT, ADMIN = "client-tk", "admin-tk"


def _swap(path: Path, text: str) -> None:
    """Replace ``path`` atomically, as the kubelet swaps a mounted Secret."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    (tmp_path / "tokens").write_text(f"{CLIENT}\n")
    (tmp_path / "admin-tokens").write_text(f"# operators\n{ADMIN}\n")
    opts = ServerOptions(drain_s=0, grace_s=0.5, auth_token_file=tmp_path / "tokens",
                         admin_token_file=tmp_path / "admin-tokens", require_auth=True)
    searcher = HybridSearcher([TermOverlapRetriever(tiny_catalog(), name="bm25")])
    with BackgroundServer(lambda: gateway_server(searcher, opts)) as srv:
        yield srv.address, tmp_path


def _md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _code(fn, *args, **kwargs) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_client_tokens_search_admin_tokens_also_administer(gateway: tuple[str, Path]) -> None:
    address, _ = gateway
    with grpc.insecure_channel(address) as ch:
        search, admin = search_pb2_grpc.SearchServiceStub(ch), admin_pb2_grpc.AdminServiceStub(ch)
        plain, debug = search_pb2.SearchRequest(query="drill"), search_pb2.SearchRequest(query="drill", debug=True)
        assert search.Search(plain, timeout=5, metadata=_md(CLIENT)).hits
        with pytest.raises(grpc.RpcError) as err:
            search.Search(debug, timeout=5, metadata=_md(CLIENT))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "`debug` needs an admin token" in err.value.details()
        for call, request in ((admin.Versions, admin_pb2.VersionsRequest()), (admin.Reload, admin_pb2.ReloadRequest())):
            with pytest.raises(grpc.RpcError) as err:
                call(request, timeout=5, metadata=_md(CLIENT))
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "needs an admin token" in err.value.details()
            assert _code(call, request, timeout=5, metadata=_md(ADMIN)) == grpc.StatusCode.OK
        assert search.Search(debug, timeout=5, metadata=_md(ADMIN)).debug_lists
        assert _code(search.Search, plain, timeout=5, metadata=_md("nope")) == grpc.StatusCode.UNAUTHENTICATED
        assert _code(admin.Versions, admin_pb2.VersionsRequest(), timeout=5) == grpc.StatusCode.UNAUTHENTICATED


def test_rotated_token_files_apply_without_a_restart(gateway: tuple[str, Path]) -> None:
    address, folder = gateway
    with grpc.insecure_channel(address) as ch:
        search = search_pb2_grpc.SearchServiceStub(ch)
        request = search_pb2.SearchRequest(query="drill")
        _swap(folder / "tokens", "rotated-tk\n")
        deadline = time.monotonic() + 5
        while _code(search.Search, request, timeout=5, metadata=_md("rotated-tk")) != grpc.StatusCode.OK:
            assert time.monotonic() < deadline, "the rotated token was not accepted within 5 s"
            time.sleep(0.1)
        assert _code(search.Search, request, timeout=5, metadata=_md(CLIENT)) == grpc.StatusCode.UNAUTHENTICATED
        _swap(folder / "tokens", "")  # a half-written Secret must neither open the server nor lock it
        time.sleep(1.2)
        assert _code(search.Search, request, timeout=5, metadata=_md("rotated-tk")) == grpc.StatusCode.OK


def test_without_admin_tokens_every_token_has_both_roles(tmp_path: Path) -> None:
    """Servers without --admin-token-file (retrievers, intent: the internal token) keep Admin."""
    (tmp_path / "tokens").write_text("internal\n")
    opts = ServerOptions(drain_s=0, grace_s=0.5, auth_token_file=tmp_path / "tokens")
    with BackgroundServer(lambda: retriever_server([TermOverlapRetriever(tiny_catalog(), name="bm25")], opts)) as srv:
        with grpc.insecure_channel(srv.address) as ch:
            reply = admin_pb2_grpc.AdminServiceStub(ch).Versions(admin_pb2.VersionsRequest(), timeout=5,
                                                                 metadata=_md("internal"))
            assert dict(reply.versions)["bm25"]


def test_a_token_set_reads_files_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t").write_text("# c\n a \n\n")
    monkeypatch.setenv("TANDEM_TEST_TOKENS", "b, ")
    tokens = TokenSet(tmp_path / "t", "TANDEM_TEST_TOKENS", check_s=0)
    assert len(tokens) == 2 and tokens.matches("a") and tokens.matches("b") and not tokens.matches(None)
    with pytest.raises(Exception, match="`admin_token_file`"):
        TokenSet(tmp_path / "missing", what="admin_token_file")


def test_gateway_serves_no_reflection_unless_asked() -> None:
    from tandem_app.cli import serve

    assert inspect.signature(serve.gateway).parameters["reflection"].default is False


class _Leaky(TermOverlapRetriever):
    def retrieve(self, queries, k):  # type: ignore[no-untyped-def]
        raise Unavailable("cache at redis://app:hunter2@10.0.0.5:6379/0 refused")


def test_url_credentials_are_redacted_from_errors_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    assert redact("redis://app:hunter2@h:6379/0 and rediss://:pw@h") == "redis://app:***@h:6379/0 and rediss://:***@h"
    assert redact("no url here: a@b") == "no url here: a@b"
    opts = ServerOptions(drain_s=0, grace_s=0.5)
    with BackgroundServer(lambda: retriever_server([_Leaky(tiny_catalog(), name="bm25")], opts)) as srv:
        with grpc.insecure_channel(srv.address) as ch, caplog.at_level(logging.WARNING):
            with pytest.raises(grpc.RpcError) as err:
                retriever_pb2_grpc.RetrieverServiceStub(ch).Retrieve(
                    retriever_pb2.RetrieveRequest(queries=["drill"], k=3), timeout=5)
    assert "hunter2" not in err.value.details() and "redis://app:***@10.0.0.5" in err.value.details()
    lines = [JsonFormatter().format(r) for r in caplog.records]
    assert lines and not any("hunter2" in line for line in lines)
    assert any("app:***@" in json.loads(line).get("error", "") for line in lines)
