"""``tandem serve --all-in-one`` and ``tandem search`` as a user runs them: real processes,
a real Lucene index, SIGTERM for a graceful stop."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from typer.testing import CliRunner

from tandem_testing.tiny_catalog import tiny_catalog

pytestmark = pytest.mark.integration

TANDEM = [sys.executable, "-c", "from tandem_app.cli import main; main()"]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tandem.jvm import ensure_jvm

    ensure_jvm()
    from tandem.sparse import build_index

    out = tmp_path_factory.mktemp("cli") / "index"
    build_index(tiny_catalog(), out)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_all_in_one_process_serves_and_stops_gracefully(index_dir: Path, tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(i.model_dump_json() + "\n" for i in tiny_catalog()))
    port = _free_port()
    proc = subprocess.Popen(
        [*TANDEM, "serve", "--all-in-one", "--index", str(index_dir), "--port", str(port),
         "--generative-factory", "tandem_testing.term_overlap:from_jsonl", "--generative-arg", str(items)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        address = f"127.0.0.1:{port}"
        with grpc.insecure_channel(address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            deadline = time.monotonic() + 90
            while True:
                assert proc.poll() is None, proc.stdout.read()
                try:
                    if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        break
                except grpc.RpcError:
                    assert time.monotonic() < deadline, "server did not become healthy"
                    time.sleep(0.3)
        out = subprocess.run([*TANDEM, "search", "cordless drill", "--server", address, "-k", "3",
                              "--category", "Tools"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "t01" in out.stdout and "bm25#1" in out.stdout and "generative#1" in out.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log = proc.stdout.read()
        assert '"msg": "draining"' in log and '"msg": "stopped"' in log
    finally:
        if proc.poll() is None:
            proc.kill()


def test_search_in_process_over_a_local_index(index_dir: Path) -> None:
    from tandem_app.cli import app

    out = CliRunner().invoke(app, ["search", "garden hose", "--index", str(index_dir), "-k", "2"])
    assert out.exit_code == 0, out.output
    assert "t18" in out.output and "bm25#1" in out.output and "complete" in out.output
