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

The pieces live in :mod:`tandem_testing.server_process` (ports, the process lifecycle),
:mod:`tandem_testing.kafka_broker` and :mod:`tandem_testing.redis_server`; this module is
the one name tests, benchmarks and scripts import them by, and the readiness command.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from tandem.errors import Unavailable
from tandem_testing.kafka_broker import (
    KAFKA_LIBS,
    KAFKA_STAMP,
    KafkaBroker,
    broker_java,
    kafka_answers_metadata,
    kafka_libs_dir,
    new_cluster_id,
)
from tandem_testing.redis_server import RedisServer, redis_answers_ping, redis_server_binary
from tandem_testing.server_process import ServerProcess, free_port, port_open, wait_until

__all__ = [
    "KAFKA_LIBS", "KAFKA_STAMP", "KafkaBroker", "RedisServer", "ServerProcess", "broker_java", "free_port",
    "kafka_answers_metadata", "kafka_libs_dir", "main", "new_cluster_id", "port_open", "redis_answers_ping",
    "redis_server_binary", "wait_until",
]


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
