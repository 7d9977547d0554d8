"""``tandem stream consume --health-port`` refuses a busy port like ``tandem serve`` (issue 24).

gRPC Python turns SO_REUSEPORT on by default, so a second consumer's health server used to
bind the same port and split the kubelet's probes with the first. Real gRPC servers on
loopback; nothing else is started.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem_app.cli import app
from tandem.ports import PortInUse
from tandem.streams.metrics import HealthServer


@pytest.fixture
def busy_port() -> Iterator[int]:
    """The port of a running consumer health server."""
    first = HealthServer(0, check_every_s=0.05)
    yield first.port
    first.stop()


def test_a_second_health_server_on_a_busy_port_is_refused_naming_it(busy_port: int) -> None:
    with pytest.raises(PortInUse) as caught:
        HealthServer(busy_port, check_every_s=0.05).stop()  # stop: only reached without the fix
    assert f"health port {busy_port} on [::] is already in use" in str(caught.value)
    assert "tandem stream consume" in str(caught.value)


def test_stream_consume_exits_non_zero_on_a_busy_health_port(busy_port: int, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("")
    result = CliRunner().invoke(app, ["stream", "consume", "--from-file", str(events), "--no-index",
                                      "--store", str(tmp_path / "store.db"), "--health-port", str(busy_port)])
    assert result.exit_code == 2, result.output
    assert f"health port {busy_port}" in " ".join(result.output.split()), result.output


def test_core_shares_the_port_helper_without_importing_services() -> None:
    code = ("import sys, tandem.ports, tandem.streams.metrics, tandem_services.server as s; "
            "assert s.PortInUse is tandem.ports.PortInUse and s.add_port is tandem.ports.add_port")
    subprocess.run([sys.executable, "-c", code], check=True)
    core_only = "import sys, tandem.streams.metrics; assert 'tandem_services' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", core_only], check=True)
