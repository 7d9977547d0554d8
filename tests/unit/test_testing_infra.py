"""tandem_testing.infra without real servers: process lifecycle on tiny shell commands, config, lookups."""

from __future__ import annotations

import base64
import socket
import sys
from pathlib import Path

import pytest

from tandem.errors import Unavailable
from tandem_testing import infra


class ShellServer(infra.ServerProcess):
    """A 'server' that is a shell snippet; ready once it has written ``ready.<its pid>``.

    The pid in the name keeps a marker left by an earlier run from passing for readiness.
    """

    name = "shell"

    def __init__(self, script: str, *, data_dir: Path | None = None, startup_timeout_s: float = 10.0) -> None:
        super().__init__(data_dir=data_dir, startup_timeout_s=startup_timeout_s)
        self.script = script
        self.port_changes = 0

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        return ["sh", "-c", self.script]

    def _ready(self, remaining_s: float) -> bool:
        return self._proc is not None and (self.data_dir / f"ready.{self._proc.pid}").exists()

    def _new_ports(self) -> None:
        self.port_changes += 1


def test_start_waits_for_readiness_and_close_removes_owned_data() -> None:
    with ShellServer("sleep 0.3; touch ready.$$; exec sleep 30") as server:
        assert server.running and server.pid
        assert server.last_startup_s is not None and server.last_startup_s >= 0.3
        data_dir = server.data_dir
        first = server.pid
        server.restart()
        assert server.running and server.pid != first
    assert not server.running
    assert not data_dir.exists()


def test_caller_owned_data_dir_is_kept(tmp_path: Path) -> None:
    with ShellServer("touch ready.$$; exec sleep 30", data_dir=tmp_path / "d"):
        pass
    assert list((tmp_path / "d").glob("ready.*"))


def test_exit_during_startup_reports_code_and_log_tail() -> None:
    server = ShellServer("echo 'fatal: bad config line 7'; exit 3")
    with pytest.raises(Unavailable, match=r"exited with code 3(.|\n)*bad config line 7"):
        with server:
            pass
    assert not server.data_dir.exists()


def test_startup_timeout_stops_the_process() -> None:
    server = ShellServer("echo starting; exec sleep 30", startup_timeout_s=0.5)
    with pytest.raises(Unavailable, match=r"did not answer within 0 s(.|\n)*starting"):
        server.start()
    assert not server.running
    server.close()


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored() -> None:
    server = ShellServer("trap '' TERM; touch ready.$$; while :; do sleep 0.1; done").start()
    proc = server._proc
    server.stop(timeout_s=0.3)
    assert proc is not None and proc.returncode == -9
    server.close()


def test_kill_keeps_data_for_the_next_start() -> None:
    server = ShellServer("echo run >> runs; touch ready.$$; exec sleep 30").start()
    server.kill()
    assert not server.running
    server.start()
    assert (server.data_dir / "runs").read_text() == "run\nrun\n"
    server.close()


def test_port_race_on_first_start_picks_new_ports() -> None:
    script = (
        "if [ -e tried ]; then touch ready.$$; exec sleep 30; fi; "
        "touch tried; echo 'Address already in use'; exit 1"
    )
    with ShellServer(script) as server:
        assert server.port_changes == 1


def test_new_cluster_id_is_kafka_shaped() -> None:
    ids = {infra.new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for cid in ids:
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_free_port_is_bindable_on_loopback() -> None:
    port = infra.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
    assert not infra.port_open("127.0.0.1", port, timeout_s=0.2)


def test_kafka_libs_dir_names_the_fix_when_not_fetched(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match=r"make setup.*scripts/kafka\.sh fetch"):
        infra.kafka_libs_dir(tmp_path)
    libs = tmp_path / infra.KAFKA_LIBS
    libs.mkdir(parents=True)
    with pytest.raises(Unavailable):  # jars without the stamp: an interrupted fetch
        infra.kafka_libs_dir(tmp_path)
    (libs / infra.KAFKA_STAMP).write_text("kafka_2.13 4.3.1\n")
    assert infra.kafka_libs_dir(tmp_path) == libs


def test_kafka_libs_dir_resolves_a_relative_home_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    libs = tmp_path / "h" / infra.KAFKA_LIBS
    libs.mkdir(parents=True)
    (libs / infra.KAFKA_STAMP).write_text("x\n")
    monkeypatch.chdir(tmp_path)
    assert infra.kafka_libs_dir(Path("h")) == tmp_path / "h" / infra.KAFKA_LIBS


def test_kafka_broker_config_binds_loopback_on_its_ports(tmp_path: Path) -> None:
    broker = infra.KafkaBroker(
        libs_dir=tmp_path, java=Path(sys.executable), broker_config={"num.partitions": "3"}
    )
    try:
        conf = dict(line.split("=", 1) for line in broker._config_text().splitlines())
        assert conf["listeners"] == (
            f"PLAINTEXT://127.0.0.1:{broker.port},CONTROLLER://127.0.0.1:{broker.controller_port}"
        )
        assert conf["controller.quorum.voters"] == f"1@127.0.0.1:{broker.controller_port}"
        assert conf["log.dirs"] == str(broker.data_dir / "logs")
        assert conf["num.partitions"] == "3"  # caller overrides win
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert broker.port != broker.controller_port
        cmd = broker._command()
        assert cmd[0] == sys.executable
        assert cmd[-2:] == ["kafka.Kafka", str(broker.data_dir / "server.properties")]
        assert str(tmp_path / "*") in cmd
    finally:
        broker.close()
    assert not broker.data_dir.exists()


def test_redis_server_requires_the_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(Unavailable, match="scripts/redis.sh install"):
        infra.RedisServer()


def test_readiness_checks_are_false_when_nothing_listens() -> None:
    port = infra.free_port()
    assert infra.kafka_answers_metadata(f"127.0.0.1:{port}", timeout_s=0.5) is False
    assert infra.redis_answers_ping(f"redis://127.0.0.1:{port}/0", timeout_s=0.5) is False


def test_module_cli_fails_fast_when_the_watched_process_is_gone() -> None:
    port = infra.free_port()
    # pid 2**22 + 1 is above Linux's pid_max limit, so it never names a live process.
    assert infra.main(["kafka-ready", f"127.0.0.1:{port}", "--pid", str(2**22 + 1), "--timeout", "10"]) == 1


def test_server_dies_with_a_killed_parent(tmp_path: Path) -> None:
    """A SIGKILLed test process must not leave its servers running (the kernel stops them)."""
    import os
    import signal
    import subprocess
    import time

    parent = subprocess.Popen(
        [sys.executable, "-c",
         ("import sys, time; sys.path.insert(0, sys.argv[1]); "
          "from test_testing_infra import ShellServer; "
          "from pathlib import Path; "
          "s = ShellServer('touch ready.$$; exec sleep 60', data_dir=Path(sys.argv[2])).start(); "
          "print(s.pid, flush=True); time.sleep(60)"),
         str(Path(__file__).parent), str(tmp_path / "server")],
        stdout=subprocess.PIPE, text=True,
    )
    assert parent.stdout is not None
    server_pid = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(server_pid, signal.SIGKILL)
    pytest.fail("server outlived its killed parent")
