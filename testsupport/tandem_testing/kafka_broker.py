"""A real single-node Kafka broker (KRaft) on loopback, and the checks that find and ask it.

The broker is the Maven Central ``org.apache.kafka:kafka_2.13`` jars that
``scripts/kafka.sh fetch`` (run by ``make setup``) puts under
``$TANDEM_HOME/infra/kafka/libs``, run by the JDK Tandem uses. :class:`KafkaBroker` formats
its storage with a fresh cluster id, starts with settings tuned for fast tests on a small
machine and counts as ready only once a metadata request lists it as a live broker
(:func:`kafka_answers_metadata`, also used by ``scripts/kafka.sh start``). The process
lifecycle is :class:`~tandem_testing.server_process.ServerProcess`'s.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import uuid
from pathlib import Path

from tandem.errors import Unavailable
from tandem_testing.server_process import ServerProcess, free_port, port_open

KAFKA_LIBS = Path("infra") / "kafka" / "libs"
"""Where ``scripts/kafka.sh fetch`` puts the broker jars, relative to ``TANDEM_HOME``."""
KAFKA_STAMP = ".tandem-kafka-version"
"""Written last by ``scripts/kafka.sh fetch``: its presence means the jar set is complete."""

_REPO_ROOT = Path(__file__).resolve().parents[2]
_FETCH_HINT = "run `make setup` or `bash scripts/kafka.sh fetch`"


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


FAST_UNFENCE = {"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"}
"""``broker_config`` for a broker that tests crash and restart: after ``kill()`` the restarted
node only unfences once the killed incarnation's registration has expired, 9 s by default,
about 3 s with these. Only for such brokers: a broker that is never restarted gains nothing,
and a 3 s session can fence the only broker (every partition leaderless) when a loaded
2-core machine delays its heartbeats."""


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
