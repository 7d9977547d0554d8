"""Fixtures shared by every test tier: real Kafka, Redis and the JVM for integration tests.

Kept light on purpose: this module is imported for every test run, unit tests included, so
anything heavy (kafka-python, redis-py, the broker itself) is imported or started inside the
fixtures, and only by the tests that ask for them.

``TANDEM_KAFKA_BOOTSTRAP`` / ``TANDEM_REDIS_URL`` point the fixtures at servers that are
already running (a CI service container, ``scripts/kafka.sh start``); otherwise a private
broker and Redis are started once per session on free loopback ports and removed at the end.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# The test-support package (tandem_testing) is not shipped in the wheel: put it on the path
# here, and on PYTHONPATH for the servers and CLIs the tests start.
_SUPPORT = str(Path(__file__).resolve().parents[1] / "testsupport")
if _SUPPORT not in sys.path:
    sys.path.insert(0, _SUPPORT)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_SUPPORT, os.environ.get("PYTHONPATH")) if p)

if TYPE_CHECKING:
    from tandem.jvm import JavaHome

_EXTERNAL_WAIT_S = 30.0


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``bootstrap_servers`` of a Kafka broker that answers metadata requests.

    Tests must not restart it (others share it); fault tests start their own
    ``tandem_testing.infra.KafkaBroker``.
    """
    from tandem_testing.infra import KafkaBroker, kafka_answers_metadata, wait_until

    external = os.environ.get("TANDEM_KAFKA_BOOTSTRAP")
    if external:
        wait_until(
            lambda: kafka_answers_metadata(external), f"TANDEM_KAFKA_BOOTSTRAP={external}", _EXTERNAL_WAIT_S
        )
        yield external
        return
    with KafkaBroker() as broker:
        yield broker.bootstrap


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://`` URL of a Redis that answers ``PING``; tests share it, so use unique keys."""
    from tandem_testing.infra import RedisServer, redis_answers_ping, wait_until

    external = os.environ.get("TANDEM_REDIS_URL")
    if external:
        wait_until(lambda: redis_answers_ping(external), f"TANDEM_REDIS_URL={external}", _EXTERNAL_WAIT_S)
        yield external
        return
    with RedisServer() as server:
        yield server.url


@pytest.fixture(scope="session")
def java_home() -> JavaHome:
    """The JDK >= 21 Pyserini runs on, with ``JAVA_HOME`` set; call before importing pyserini."""
    from tandem.jvm import ensure_jvm

    return ensure_jvm()


@pytest.fixture
def kafka_topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Factory ``make(partitions=1, **configs) -> name`` creating uniquely named topics.

    Names carry the test's name and a random suffix, so tests never see each other's data
    on a shared broker; the topics are deleted afterwards.
    """
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tandem-tests")
    created: list[str] = []
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name)[:80]

    def make(partitions: int = 1, **configs: str) -> str:
        name = f"test.{stem}.{uuid.uuid4().hex[:8]}"
        admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1, "configs": configs}},
            wait_for_metadata=True,
        )
        created.append(name)
        return name

    try:
        yield make
    finally:
        try:
            if created:
                admin.delete_topics(created, raise_errors=False)
        finally:
            admin.close()


@pytest.fixture(autouse=True)
def _restore_tandem_loggers() -> Iterator[None]:
    """Put the ``tandem*`` loggers back as each test found them.

    ``tandem serve`` run in-process (CliRunner) calls ``setup_logging``, which binds a handler
    to the runner's temporary stderr; later tests' log records would then hit that closed
    stream and print "--- Logging error ---" into another command's captured output.
    """
    import logging

    loggers = [logging.getLogger(name) for name in ("tandem", "tandem_services")]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate = propagate
