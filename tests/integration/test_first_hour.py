"""Issue 24 as a new user runs it: real ``tandem`` processes against the real Kafka broker and
Redis of the session fixtures. The doctor passes on healthy servers, a second server on a busy
port exits naming the port, and a gateway whose Redis is down says so in its log and in health.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.integration

TANDEM = [sys.executable, "-m", "tandem_app.cli"]
REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    """This process's environment without TANDEM_* settings, plus ``extra``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")} | extra


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_serving(address: str, proc: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"no server became healthy at {address}"
            time.sleep(0.3)


@contextmanager
def _serving(args: list[str], port: int, **env: str) -> Iterator[subprocess.Popen]:
    """``tandem serve ...`` on ``port`` until the block ends (SIGTERM); its output merged."""
    proc = subprocess.Popen([*TANDEM, "serve", *args, "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(**env))
    try:
        _wait_serving(f"127.0.0.1:{port}", proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_doctor_passes_against_the_real_broker_and_redis(kafka_bootstrap: str, redis_url: str) -> None:
    proc = subprocess.run([*TANDEM, "doctor"], capture_output=True, text=True, timeout=180,
                          env=_env(TANDEM_KAFKA_BOOTSTRAP=kafka_bootstrap, TANDEM_REDIS_URL=redis_url))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if line.count("│") >= 4}
    assert "ok" in rows["kafka"] and "topics" in rows["kafka"], rows.get("kafka")
    assert "ok" in rows["redis"] and "Redis" in rows["redis"], rows.get("redis")


def test_a_second_server_on_a_busy_port_exits_non_zero_naming_the_port() -> None:
    port = _free_port()
    with _serving(["intent"], port) as first:
        second = subprocess.run([*TANDEM, "serve", "intent", "--port", str(port)], capture_output=True,
                                text=True, timeout=120, env=_env())
        assert second.returncode != 0, second.stdout + second.stderr
        assert f"port {port} on 127.0.0.1 is already in use" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None, "the first server must keep serving"


def test_a_gateway_with_redis_down_warns_and_health_reports_the_cache_degraded() -> None:
    port, dead = _free_port(), _free_port()
    with _serving(["gateway", "--sparse", f"127.0.0.1:{_free_port()}"], port,
                  TANDEM_REDIS_URL=f"redis://127.0.0.1:{dead}/0") as gateway:
        health = subprocess.run([*TANDEM, "health", "--server", f"127.0.0.1:{port}"], capture_output=True,
                                text=True, timeout=60, env=_env())
        gateway.send_signal(signal.SIGTERM)
        log = gateway.communicate(timeout=30)[0]
    assert health.returncode == 3, health.stdout + health.stderr
    assert "tandem.v1.SearchService" in health.stdout
    assert re.search(r"^dependency cache +NOT_SERVING$", health.stdout, re.M), health.stdout
    assert "degraded: cache unreachable" in health.stderr
    assert f"result cache: redis at 127.0.0.1:{dead}/0" in log, log
    assert "result cache unreachable" in log and "searches run uncached" in log, log
    assert "UNREACHABLE, serving degraded" in log, log


def test_a_gateway_with_redis_up_is_healthy_everywhere(redis_url: str) -> None:
    port = _free_port()
    with _serving(["gateway", "--sparse", f"127.0.0.1:{_free_port()}"], port, TANDEM_REDIS_URL=redis_url):
        health = subprocess.run([*TANDEM, "health", "--server", f"127.0.0.1:{port}"], capture_output=True,
                                text=True, timeout=60, env=_env())
    assert health.returncode == 0, health.stdout + health.stderr
    assert re.search(r"^dependency cache +SERVING$", health.stdout, re.M), health.stdout


def test_scripts_and_the_cli_agree_on_a_relative_tandem_home(tmp_path: Path) -> None:
    """A relative TANDEM_HOME is taken from the current directory by `tandem` and `scripts/` alike."""
    work = tmp_path / "work"
    work.mkdir()
    env = _env(TANDEM_HOME="myhome")
    cli_home = subprocess.run([sys.executable, "-c", ("from tandem.config import get_settings; "
                                                        "print(get_settings().home.resolve())")], cwd=work, env=env, capture_output=True,
                              text=True, timeout=60, check=True).stdout.strip()
    assert Path(cli_home) == work / "myhome"
    redis = [str(REPO / "scripts" / "redis.sh")]
    started = subprocess.run(["bash", *redis, "start", "--port", str(_free_port())], cwd=work, env=env,
                             capture_output=True, text=True, timeout=60)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert (work / "myhome" / "infra" / "redis" / "redis.pid").exists(), list(work.rglob("*"))
    finally:
        subprocess.run(["bash", *redis, "stop"], cwd=work, env=env, capture_output=True, timeout=60)
    # Tools `make setup` put under the repository root's home are still found from here.
    helm = subprocess.run(["bash", str(REPO / "scripts" / "helm.sh"), "path"], cwd=work, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert helm.returncode == 0 and helm.stdout.startswith(str(REPO)), helm.stdout + helm.stderr
