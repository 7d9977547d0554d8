"""`tandem --help` and `tandem doctor`, run as a user would (a subprocess)."""

import os
import socket
import subprocess
import sys
import time

import pytest


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")} | env
    return subprocess.run([sys.executable, "-m", "tandem_app.cli", *args], capture_output=True,
                          text=True, timeout=120, env=full_env)


def test_help_lists_doctor_and_does_not_import_torch() -> None:
    code = ("import sys; from tandem_app.cli import app; "
            "print('torch' in sys.modules, 'pyserini' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "False"], proc.stderr
    help_out = _run(["--help"])
    assert help_out.returncode == 0
    assert "doctor" in help_out.stdout


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_doctor_reports_unreachable_kafka_quickly() -> None:
    port = _closed_port()
    started = time.monotonic()
    proc = _run(["doctor"], TANDEM_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}", TANDEM_CONNECT_TIMEOUT_S="2")
    took = time.monotonic() - started
    assert proc.returncode == 1
    assert f"127.0.0.1:{port}" in proc.stdout and "unreachable" in proc.stdout
    assert "kafka" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert took < 30, f"doctor hung for {took:.1f}s on an unreachable broker"


@pytest.mark.parametrize("value", ["not-a-host-port", "127.0.0.1:notaport"])
def test_doctor_names_a_malformed_bootstrap(value: str) -> None:
    proc = _run(["doctor"], TANDEM_KAFKA_BOOTSTRAP=value)
    assert proc.returncode == 1
    assert "TANDEM_KAFKA_BOOTSTRAP" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_doctor_rejects_invalid_settings_without_traceback() -> None:
    proc = _run(["doctor"], TANDEM_CONNECT_TIMEOUT_S="-3")
    assert proc.returncode == 2
    assert "connect_timeout_s" in proc.stderr
    assert "Traceback" not in proc.stderr
