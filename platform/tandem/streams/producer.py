"""Publishing item events to Kafka: an idempotent producer (acks=all) and event-file reading."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tandem.catalog.events import EventError, ItemEvent, encode_event, parse_line
from tandem.errors import InvalidInput, Unavailable
from tandem.streams.config import StreamSettings

log = logging.getLogger(__name__)


@dataclass
class FileLine:
    """One line of an event file: its number and either the event or why it was refused."""

    lineno: int
    event: ItemEvent | None = None
    error: EventError | None = None


def read_event_file(path: str | Path) -> Iterator[FileLine]:
    """Events from a JSONL file of events or bare items (blank lines skipped), in file order."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"`FILE` {p} does not exist")
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield FileLine(n, event=parse_line(line))
            except EventError as e:
                yield FileLine(n, error=e)


@dataclass
class PublishReport:
    """What :meth:`EventProducer.publish` sent."""

    sent: int = 0
    offsets: list[tuple[int, int]] = field(default_factory=list)
    """``(partition, offset)`` of each record, in send order."""


class EventProducer:
    """Idempotent Kafka producer of item events (``enable_idempotence``, ``acks=all``).

    Idempotence makes the broker drop the duplicates a retried send would otherwise write,
    and keeps per-partition order across retries; with key = ``item_id`` all versions of an
    item land on one partition in publish order.
    """

    def __init__(self, settings: StreamSettings | None = None, *, topic: str | None = None, **overrides: Any) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.settings = settings or StreamSettings()
        if not self.settings.kafka_bootstrap:
            raise InvalidInput("`TANDEM_KAFKA_BOOTSTRAP` is not set; there is no broker to publish to")
        self.topic = topic or self.settings.items_topic
        conf: dict[str, Any] = {
            "bootstrap_servers": self.settings.kafka_bootstrap.split(","),
            "client_id": "tandem-publish",
            "enable_idempotence": True,
            "acks": "all",
            "linger_ms": 5,
            **self.settings.kafka_client_config(),
            **overrides,
        }
        try:
            self._producer = KafkaProducer(**conf)
        except KafkaError as e:
            raise Unavailable(f"Kafka at {self.settings.kafka_bootstrap} is unreachable: {e}") from e

    def send_raw(
        self, key: bytes | None, value: bytes | None, *, topic: str | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:  # fmt: skip
        """Send one record as is (no validation); returns kafka-python's future."""
        return self._producer.send(topic or self.topic, key=key, value=value, headers=headers)

    def publish(self, events: Iterable[ItemEvent], *, wait: bool = True) -> PublishReport:
        """Send events in order; with ``wait`` (default) block until the broker acknowledged all."""
        futures = []
        for ev in events:
            key, value = encode_event(ev)
            futures.append(self.send_raw(key, value))
        report = PublishReport(sent=len(futures))
        if wait:
            self.flush()
            for f in futures:
                md = f.get(timeout=30)
                report.offsets.append((md.partition, md.offset))
        return report

    def flush(self, timeout_s: float = 60.0) -> None:
        """Block until every buffered record is acknowledged."""
        self._producer.flush(timeout=timeout_s)

    def close(self) -> None:
        """Flush and close."""
        self._producer.close()

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
