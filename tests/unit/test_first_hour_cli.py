"""The CLI as a new user meets it (issue 24): one default index, a checked ``--server``, a
hint when no server answers, a usage error instead of a page of help, a consumer that says it
is alive, a doctor that speaks the installed kafka-python, and ``tandem health``."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from tandem_app.cli import app
from tandem_app.cli._options import default_index, server_address
from tandem.errors import InvalidInput


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``TANDEM_HOME`` pointed at an empty folder, with the settings cache cleared around it."""
    from tandem.config import get_settings

    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _flat(text: str) -> str:
    """Output without rich's box borders and line wrapping, to search for long strings."""
    return "".join(text.replace("│", "").split())


# --- defaults ---------------------------------------------------------------------------------


def test_every_command_defaults_to_the_index_that_index_build_writes(home: Path) -> None:
    assert default_index() == home / "indexes" / "bm25"
    for args in (["search", "drill"], ["serve", "--all-in-one"]):
        code, out = _run(*args)
        assert code == 2, out
        assert str(home / "indexes" / "bm25") in _flat(out), out
        assert "tandemindexbuild" in _flat(out), out


# --- --server ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["localhost", "127.0.0.1:", "localhost:http", "localhost:70000", ":50051"])
def test_server_without_a_usable_port_is_refused_naming_the_option(value: str) -> None:
    with pytest.raises(InvalidInput, match="`--server` expects HOST:PORT"):
        server_address(value)


@pytest.mark.parametrize("value", ["localhost:50051", "[::1]:50051", "unix:/tmp/tandem.sock"])
def test_good_server_addresses_pass(value: str) -> None:
    assert server_address(value) == value


def test_search_with_a_bare_host_fails_before_dialing() -> None:
    started = time.monotonic()
    code, out = _run("search", "drill", "--server", "localhost")
    assert code == 2 and "`--server`expectsHOST:PORT" in _flat(out), out
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("command", [["search", "drill", "--timeout-ms", "500"], ["health", "--timeout-s", "0.5"]])
def test_no_server_running_says_to_start_one(command: list[str]) -> None:
    code, out = _run(*command, "--server", f"127.0.0.1:{_closed_port()}")
    assert code == 1, out
    assert "UNAVAILABLE" in out or "DEADLINE_EXCEEDED" in out
    assert "tandemserve--all-in-one" in _flat(out), out


# --- serve without a service ------------------------------------------------------------------


def test_serve_without_a_service_is_a_usage_error_naming_what_was_given() -> None:
    code, out = _run("serve", "--index", "some/index")
    assert code == 2
    assert "Error" in out and "nameaservice(gateway,sparse,generative,intent)orpass--all-in-one" in _flat(out), out
    assert "--indexgivenwithouteither" in _flat(out), out
    assert "--tls-client-ca" not in out, "the whole help page was printed instead of the error"


# --- stream consume status line ---------------------------------------------------------------


def test_consumer_status_line_reports_progress_periodically() -> None:
    from tandem_app.cli.stream import StatusLine

    totals = SimpleNamespace(events=0, dead_lettered=0, applied=0, duplicates=0, stale=0, quarantined=0)
    lines: list[str] = []
    with StatusLine(lambda: totals, 0.05, "tandem.items @ 127.0.0.1:9092", lines.append):
        time.sleep(0.12)
        totals.events, totals.applied = 7, 7
        time.sleep(0.15)
    assert len(lines) >= 2
    assert lines[0].startswith("consume tandem.items @ 127.0.0.1:9092: 0 events")
    assert any("7 events (7 new" in ln and "applied 7" in ln for ln in lines), lines


def test_consumer_status_line_shows_the_lag_once_measured() -> None:
    from tandem_app.cli.stream import StatusLine

    totals = SimpleNamespace(events=3, dead_lettered=0, applied=3, duplicates=0, stale=0, quarantined=0)
    lag: list[int | None] = [None]
    status = StatusLine(lambda: totals, 10, "t", print, lag=lambda: lag[0])
    assert status.line().endswith("quarantined 0; lag ?")
    lag[0] = 27
    assert status.line().endswith("; lag 27")


def test_consumer_status_line_off_prints_nothing() -> None:
    from tandem_app.cli.stream import StatusLine

    lines: list[str] = []
    totals = SimpleNamespace(events=1, dead_lettered=0, applied=1, duplicates=0, stale=0, quarantined=0)
    with StatusLine(lambda: totals, 0, "t", lines.append):
        time.sleep(0.05)
    assert lines == []


# --- doctor and kafka-python ------------------------------------------------------------------


def test_doctor_passes_only_options_the_installed_kafka_admin_client_knows() -> None:
    from kafka import KafkaAdminClient

    from tandem_app.cli.doctor import _admin_config

    conf = _admin_config(KafkaAdminClient, ["127.0.0.1:9092"], 2.0)
    assert set(conf) <= set(KafkaAdminClient.DEFAULT_CONFIG), set(conf) - set(KafkaAdminClient.DEFAULT_CONFIG)
    # The version probe is bounded too, whatever the installed client calls it.
    assert {"api_version_auto_timeout_ms", "bootstrap_timeout_ms"} & set(conf)
    assert conf["request_timeout_ms"] == 2000


# --- tandem health ----------------------------------------------------------------------------


class _Background:
    """A TandemServer on its own event loop thread, so a CLI command can call it."""

    def __init__(self, server) -> None:  # noqa: ANN001 - a TandemServer
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.mark.parametrize(("cache_up", "exit_code"), [(True, 0), (False, 3)])
def test_health_lists_the_server_and_a_degraded_cache(cache_up: bool, exit_code: int) -> None:
    from tandem_services.server import Dependency, ServerOptions, TandemServer

    server = TandemServer([], ServerOptions(port=0, drain_s=0, grace_s=0),
                          dependencies=[Dependency("cache", lambda: cache_up, describe="redis at x")])
    with _Background(server) as port:
        code, out = _run("health", "--server", f"127.0.0.1:{port}")
    assert code == exit_code, out
    assert "server" in out and "SERVING" in out
    assert re.search(rf"^dependency cache +{'SERVING' if cache_up else 'NOT_SERVING'}$", out, re.M), out
    assert ("degraded: cache unreachable" in out) is not cache_up


def test_health_wait_s_waits_for_a_server_that_is_still_starting() -> None:
    from tandem_services.server import ServerOptions, TandemServer

    port = _closed_port()
    server = TandemServer([], ServerOptions(port=port, drain_s=0, grace_s=0))
    started: list[float] = []

    def start_later() -> None:
        time.sleep(1.0)
        started.append(time.monotonic())
        background.__enter__()

    background = _Background(server)
    threading.Thread(target=start_later, daemon=True).start()
    try:
        code, out = _run("health", "--server", f"127.0.0.1:{port}", "--wait-s", "30", "--timeout-s", "0.5")
    finally:
        if started:
            background.__exit__()
    assert started, "the server never started"
    assert code == 0, out
    assert re.search(r"^server +SERVING$", out, re.M), out


def test_consume_summary_is_one_line_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"op": "upsert", "version": 1, "item": {"item_id": "900001", "title": "Solar Gazebo Lantern"}}\n')
    code, out = _run("stream", "consume", "--from-file", str(events), "--no-index",
                     "--store", str(tmp_path / "catalog.sqlite"))
    assert code == 0, out
    assert ("events 1: applied 1, duplicates 0, stale 0, refused 0, quarantined 0; "
            "store: 1 items, 0 tombstones, seq 1") in out.splitlines(), out


@pytest.mark.parametrize("option", ["--sparse", "--generative", "--intent"])
def test_gateway_downstream_addresses_need_a_port(option: str) -> None:
    args = ["serve", "gateway", "--sparse", "127.0.0.1:50052"]
    args = [*args, option, "retriever-host"] if option != "--sparse" else ["serve", "gateway", "--sparse", "sparse-host"]
    code, out = _run(*args)
    assert code == 2, out
    assert f"`{option}`expectsHOST:PORT" in _flat(out), out
