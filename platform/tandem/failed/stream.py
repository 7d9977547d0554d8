"""``tandem.failed-queries`` on Kafka: publishing failed searches and collecting them for the
pipeline step.

:class:`FailedQueryPublisher` sends records through the idempotent
:class:`~tandem.streams.producer.EventProducer`. :class:`FailedQueryCollector` is an applier
for the ingest consumer (commit after write, dead letters for malformed records) that appends
every record to a JSONL file, the step's input; :func:`read_failed` reads such a file back.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tandem.errors import InvalidInput
from tandem.failed.events import FAILED_TOPIC, FailedQuery, FailedQueryError, decode_failed, encode_failed
from tandem.streams.apply import BatchReport
from tandem.streams.config import StreamSettings

FAILED_GROUP = "tandem-failed-queries"


class FailedQueryPublisher:
    """Sends failed-search records to ``tandem.failed-queries``."""

    def __init__(self, settings: StreamSettings | None = None, topic: str = FAILED_TOPIC) -> None:
        from tandem.streams.producer import EventProducer

        self.topic = topic
        self._producer = EventProducer(settings or StreamSettings(), topic=topic, client_id="tandem-failed-queries",
                                       max_block_ms=2000)

    def send(self, records: Sequence[FailedQuery], *, wait: bool = False) -> None:
        """Queue ``records`` (``wait``: block until acknowledged)."""
        for r in records:
            self._producer.send_raw(*encode_failed(r))
        if wait:
            self._producer.flush(30.0)

    def close(self) -> None:
        """Flush and close."""
        self._producer.close()


class _Progress:
    """What the ingest consumer reports as its store's sequence number: records written so far."""

    seq = 0


class FailedQueryCollector:
    """Appends consumed records to a JSONL file (flushed per batch)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._mu = threading.Lock()
        self.store = _Progress()

    def apply(self, records: Sequence[FailedQuery]) -> BatchReport:
        """Append ``records``; a :class:`BatchReport` in the ingest consumer's terms."""
        started = time.perf_counter()
        with self._mu, self.path.open("a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r.to_dict(), separators=(",", ":")) + "\n" for r in records))
        self.store.seq += len(records)
        return BatchReport(events=len(records), applied=len(records), duplicates=0, stale=0, indexed=0,
                           seconds=time.perf_counter() - started)


def failed_query_consumer(path: str | Path, settings: StreamSettings | None = None, *, group: str = FAILED_GROUP,
                          topic: str = FAILED_TOPIC, max_batch: int = 500, **overrides: Any) -> Any:
    """An :class:`~tandem.streams.consumer.IngestConsumer` collecting the topic into ``path``."""
    from tandem.streams.consumer import IngestConsumer

    settings = settings or StreamSettings()
    return IngestConsumer(FailedQueryCollector(path), settings, group=group, topic=topic,  # type: ignore[arg-type]
                          dlq_topic=f"{topic}.dlq", max_batch=max_batch, decode=decode_failed, **overrides)


def read_failed(path: str | Path) -> Iterator[FailedQuery]:
    """The records of a JSONL file; a malformed line is an :class:`InvalidInput` naming it."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"`failed` {p} does not exist")
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    yield decode_failed(None, line)
                except FailedQueryError as exc:
                    raise InvalidInput(f"`failed` {p} line {n}: {exc}") from None
