"""Real Kafka (KRaft, single node) and Redis servers on loopback, for tests and local runs.

Integration tests must talk to the real engines, not mocks; these managers make that cheap:
each picks free loopback ports, works in its own temporary folder, starts the server as a
child process, waits until it answers a real request (Kafka: a metadata request listing a
live broker; Redis: ``PING``), and on exit stops it (SIGTERM, then SIGKILL) and removes its
data. ``restart()`` keeps ports and data, so clients reconnect to the same address; fault
tests use it (and ``kill()``) to simulate outages.

The broker is the Maven Central ``org.apache.kafka:kafka_2.13`` jars that
``scripts/kafka.sh fetch`` (run by ``make setup``) puts under
``$TANDEM_HOME/infra/kafka/libs``; ``redis-server`` is the Debian package that
``scripts/redis.sh install`` adds.

Run as a module, it waits for a broker: ``python -m tandem_testing.infra kafka-ready HOST:PORT``
(``scripts/kafka.sh start`` uses it so the script and the fixtures share one readiness check).
"""

from __future__ import annotations

import abc
import argparse
import base64
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from tandem.errors import Unavailable

log = logging.getLogger(__name__)

KAFKA_LIBS = Path("infra") / "kafka" / "libs"
"""Where ``scripts/kafka.sh fetch`` puts the broker jars, relative to ``TANDEM_HOME``."""
KAFKA_STAMP = ".tandem-kafka-version"
"""Written last by ``scripts/kafka.sh fetch``: its presence means the jar set is complete."""

_REPO_ROOT = Path(__file__).resolve().parents[2]
_FETCH_HINT = "run `make setup` or `bash scripts/kafka.sh fetch`"


def free_port(host: str = "127.0.0.1", avoid: int | None = None) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it).

    ``avoid``: a port already chosen but not yet bound, which the OS could hand out again.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port != avoid:
            return port


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds within ``timeout_s``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def kafka_libs_dir(home: Path | None = None) -> Path:
    """The folder of fetched Kafka broker jars; raises :class:`Unavailable` naming the fix.

    ``home`` defaults to the ``TANDEM_HOME`` setting; a relative home is tried against the
    working directory and then the repository root, so tests run from any folder find it.
    """
    if home is None:
        from tandem.config import get_settings

        home = get_settings().home
    roots = [home] if home.is_absolute() else [Path.cwd() / home, _REPO_ROOT / home]
    for root in roots:
        libs = root / KAFKA_LIBS
        if (libs / KAFKA_STAMP).is_file():
            return libs
    tried = ", ".join(str(r / KAFKA_LIBS) for r in roots)
    raise Unavailable(f"Kafka broker jars not found (looked in {tried}); {_FETCH_HINT}")


def broker_java() -> Path:
    """A ``java`` that runs the broker: the JDK >= 21 Tandem uses, else ``java`` on PATH."""
    from tandem.jvm import find_java_home

    try:
        return find_java_home().path / "bin" / "java"
    except Unavailable:
        on_path = shutil.which("java")
        if on_path is None:
            raise Unavailable("no `java` found for the Kafka broker; run `make setup`") from None
        return Path(on_path)


def new_cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64 without padding (22 characters).

    Same format as ``kafka-storage random-uuid``, without paying a JVM start for it. Ids
    starting with ``-`` are redrawn, as Kafka does, since they read as CLI flags.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _die_with_parent() -> list[str]:
    """Command prefix that makes the kernel SIGTERM the server when the test process dies.

    Keeps a crashed or SIGKILLed pytest from leaving brokers behind. util-linux ``setpriv``
    (essential on Debian) sets the flag and execs the server, so the pid stays the server's;
    a ``preexec_fn`` would do the same but is unsafe in a process with threads, which
    kafka-python clients start. Linux ties the signal to the thread that forked, so start
    servers from a thread that outlives them (pytest's main one). Empty where unavailable.
    """
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


class ServerProcess(abc.ABC):
    """A server run as a child process with a bounded, checked startup and clean shutdown.

    Subclasses say how to prepare the data folder, which command to run and how to tell
    that the server answers; this class owns the process lifecycle.
    """

    name: str = "server"

    def __init__(self, *, data_dir: Path | None = None, startup_timeout_s: float = 90.0) -> None:
        self._owns_dir = data_dir is None
        if data_dir is None:
            data_dir = Path(tempfile.mkdtemp(prefix=f"tandem-{self.name}-"))
        self.data_dir = data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.startup_timeout_s = startup_timeout_s
        self.log_path = self.data_dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self.last_startup_s: float | None = None
        """Seconds the most recent start took from launch to a successful readiness check."""

    # -- what subclasses provide ---------------------------------------------------------
    @abc.abstractmethod
    def _prepare(self) -> None:
        """Create config and storage in ``data_dir``; runs once, before the first start."""

    @abc.abstractmethod
    def _command(self) -> list[str]:
        """The command line that runs the server in the foreground."""

    @abc.abstractmethod
    def _ready(self, remaining_s: float) -> bool:
        """Whether the server answers a real request now (must not block past ``remaining_s``)."""

    @abc.abstractmethod
    def _new_ports(self) -> None:
        """Pick other free ports after a port race at first start (raise when ports are fixed)."""

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """Process id while running, else ``None``."""
        return self._proc.pid if self.running and self._proc else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start the server and wait until it answers; raises :class:`Unavailable` if it does not.

        A free port can be taken by someone else between choosing and binding it; when the
        first start fails that way, new ports are chosen (up to three tries).
        """
        if self.running:
            return self
        first = not self._prepared
        for attempt in range(3):
            if not self._prepared:
                self._prepare()
                self._prepared = True
            try:
                self._launch_and_wait()
                return self
            except Unavailable:
                if first and attempt < 2 and "Address already in use" in self.log_tail():
                    log.warning("%s: port taken during startup; retrying on new ports", self.name)
                    self._new_ports()
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch_and_wait(self) -> None:
        t0 = time.monotonic()
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                [*_die_with_parent(), *self._command()],
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = t0 + self.startup_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise Unavailable(
                    f"{self.name} exited with code {code} during startup; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise Unavailable(
                    f"{self.name} did not answer within {self.startup_timeout_s:.0f} s; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            if self._ready(remaining):
                self.last_startup_s = time.monotonic() - t0
                log.info("%s ready in %.1f s", self.name, self.last_startup_s)
                return
            time.sleep(0.1)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL after ``timeout_s``; data is kept."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0f s; killing it", self.name, timeout_s)
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Crash the server (SIGKILL, no shutdown work); data is kept for a later ``start``."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> Self:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and remove its data folder when this object created it."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the server's log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def kafka_answers_metadata(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """Whether the broker at ``bootstrap`` answers a metadata request listing a live broker.

    kafka-python's bootstrap sends ApiVersions + Metadata and retries until the answer
    lists a broker; a KRaft broker lists itself only once registered and unfenced, which is
    when topics can be created. ``list_topics`` then issues one more metadata request.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not port_open(host or "127.0.0.1", int(port), timeout_s=min(timeout_s, 1.0)):
        return False  # cheap check first: kafka-python logs errors for every refused try
    ms = max(int(timeout_s * 1000), 500)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, bootstrap_timeout_ms=ms, request_timeout_ms=ms,
            client_id="tandem-readiness",
        )
    except (KafkaError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


class KafkaBroker(ServerProcess):
    """A single-node Apache Kafka in KRaft mode (one process: controller + broker).

    Listeners bind 127.0.0.1 on free ports; storage is formatted with a fresh cluster id in
    the data folder. Settings favour fast tests on a small machine: a 512 MiB heap, no
    group-join delay, few offsets partitions, replication factor 1 everywhere.
    """

    name = "kafka"

    def __init__(
        self,
        *,
        libs_dir: Path | None = None,
        java: Path | None = None,
        data_dir: Path | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        startup_timeout_s: float = 90.0,
        heap: str = "512m",
        broker_config: dict[str, str] | None = None,
    ) -> None:
        # Resolve the jars and java first: a missing setup should fail before any folder exists.
        self.libs_dir = libs_dir if libs_dir is not None else kafka_libs_dir()
        self.java = java if java is not None else broker_java()
        super().__init__(data_dir=data_dir, startup_timeout_s=startup_timeout_s)
        self._fixed_ports = port is not None or controller_port is not None
        self.port = port if port is not None else free_port()
        self.controller_port = controller_port if controller_port is not None else free_port(avoid=self.port)
        self.heap = heap
        self.broker_config = dict(broker_config or {})
        self.cluster_id = new_cluster_id()

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients' ``bootstrap_servers``."""
        return f"127.0.0.1:{self.port}"

    def _config_text(self) -> str:
        conf = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            # 50 by default: creating them on the first group join costs seconds on 2 cores.
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # The default 3 s delay only helps groups whose members arrive one by one.
            "group.initial.rebalance.delay.ms": "0",
        }
        conf.update(self.broker_config)
        return "".join(f"{k}={v}\n" for k, v in conf.items())

    def _write_config(self) -> None:
        (self.data_dir / "server.properties").write_text(self._config_text())
        (self.data_dir / "log4j2.properties").write_text(
            "rootLogger.level=INFO\n"
            "rootLogger.appenderRef.out.ref=out\n"
            "appender.out.type=Console\n"
            "appender.out.name=out\n"
            "appender.out.layout.type=PatternLayout\n"
            "appender.out.layout.pattern=[%d] %p %m (%c)%n\n"
        )

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        return [
            # C1 only and a serial GC: a test broker lives for seconds to minutes on a small,
            # shared machine, where C2's compile threads cost more CPU than they ever save.
            str(self.java), "-Xms64m", f"-Xmx{self.heap}", "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            "-cp", str(self.libs_dir / "*"), main, *args,
        ]

    def _prepare(self) -> None:
        self._write_config()
        if (self.data_dir / "logs" / "meta.properties").exists():
            return  # a caller-supplied data folder from an earlier broker: keep its cluster
        fmt = subprocess.run(
            self._java_cmd(
                "kafka.tools.StorageTool", "format",
                "--config", str(self.data_dir / "server.properties"),
                "--cluster-id", self.cluster_id,
            ),
            capture_output=True, text=True, timeout=120,
        )
        if fmt.returncode != 0:
            raise Unavailable(
                f"formatting Kafka storage in {self.data_dir} failed (exit {fmt.returncode}):\n"
                + (fmt.stdout + fmt.stderr)[-3000:]
            )

    def _new_ports(self) -> None:
        if self._fixed_ports:
            raise Unavailable(f"Kafka ports {self.port}/{self.controller_port} are in use")
        self.port = free_port()
        self.controller_port = free_port(avoid=self.port)
        # The controller's address is in the config only (static quorum), not in the
        # formatted storage, so rewriting the config is enough.
        self._write_config()

    def _command(self) -> list[str]:
        return self._java_cmd("kafka.Kafka", str(self.data_dir / "server.properties"))

    def _ready(self, remaining_s: float) -> bool:
        return kafka_answers_metadata(self.bootstrap, timeout_s=min(remaining_s, 5.0))


def redis_server_binary() -> Path:
    """``redis-server`` on PATH; raises :class:`Unavailable` naming the fix when missing."""
    found = shutil.which("redis-server")
    if found is None:
        raise Unavailable("`redis-server` not found; run `make setup` or `bash scripts/redis.sh install`")
    return Path(found)


class RedisServer(ServerProcess):
    """A throwaway Redis on 127.0.0.1: no persistence, so a restart starts empty.

    That matches how Tandem uses Redis (a result cache that may lose everything); tests of
    the cache after a Redis restart rely on it.
    """

    name = "redis"

    def __init__(
        self,
        *,
        binary: Path | None = None,
        data_dir: Path | None = None,
        port: int | None = None,
        startup_timeout_s: float = 30.0,
    ) -> None:
        self.binary = binary if binary is not None else redis_server_binary()
        super().__init__(data_dir=data_dir, startup_timeout_s=startup_timeout_s)
        self._fixed_ports = port is not None
        self.port = port if port is not None else free_port()

    @property
    def url(self) -> str:
        """``redis://`` URL for ``redis.Redis.from_url`` (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def _new_ports(self) -> None:
        if self._fixed_ports:
            raise Unavailable(f"Redis port {self.port} is in use")
        self.port = free_port()

    def _command(self) -> list[str]:
        return [
            str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", str(self.data_dir),
            "--daemonize", "no", "--protected-mode", "yes",
        ]

    def _ready(self, remaining_s: float) -> bool:
        return redis_answers_ping(self.url, timeout_s=min(remaining_s, 2.0))


def redis_answers_ping(url: str, timeout_s: float = 2.0) -> bool:
    """Whether the Redis at ``url`` answers ``PING``."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def wait_until(check: Callable[[], bool], what: str, timeout_s: float) -> None:
    """Poll ``check()`` until true; raises :class:`Unavailable` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise Unavailable(f"{what} did not answer within {timeout_s:.0f} s")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    """``python -m tandem_testing.infra kafka-ready|redis-ready ADDRESS [--timeout S] [--pid N]``."""
    parser = argparse.ArgumentParser(prog="python -m tandem_testing.infra")
    parser.add_argument("check", choices=["kafka-ready", "redis-ready"])
    parser.add_argument("address", help="Kafka bootstrap host:port, or a redis:// URL")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait")
    parser.add_argument("--pid", type=int, help="give up early when this process exits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # kafka-python logs every refused try

    def answers() -> bool:
        if args.pid is not None and not _pid_alive(args.pid):
            raise Unavailable(f"process {args.pid} exited before {args.address} answered")
        if args.check == "kafka-ready":
            return kafka_answers_metadata(args.address)
        return redis_answers_ping(args.address)

    try:
        wait_until(answers, args.address, args.timeout)
    except Unavailable as exc:
        print(f"{args.check}: {exc}", file=sys.stderr)
        return 1
    return 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    raise SystemExit(main())
