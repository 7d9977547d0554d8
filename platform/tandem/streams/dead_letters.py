"""Dead letters: refused item events, delivered to the dead-letter topic before any commit.

A dead letter is the refused record itself (key and value as read) with the reason and its
source coordinates in headers. :func:`deliver` returns only once the broker acknowledged every
letter, because the consumer commits the batch's offsets right after:

* a broker outage is waited out: a flush that times out is retried and a letter whose
  delivery failed with a retriable error is sent again, so none is dropped;
* a letter refused as too large (``MessageSizeTooLargeError``, from the producer's
  ``max_request_size`` or the topic's ``max.message.bytes``) is sent again without its value
  and the source's own headers (:func:`truncated`); header ``tandem-dlq-truncated`` holds the
  value's size and the source topic/partition/offset headers find the original record. A
  broker-side refusal leaves an idempotent producer unable to send to that partition again
  (every later send fails the same way; found by ``bench.faults oversized_dead_letter``), so
  the producer is replaced (``renew``) before the resend;
* any other refusal that retrying cannot fix (authorisation, an invalid topic, a truncated
  letter still too large) raises :class:`DeadLetterRefused`, which ends the consumer with the
  batch uncommitted and a message naming the fix, instead of retrying forever.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tandem.errors import TandemError, Unavailable
from tandem.streams import metrics

log = logging.getLogger(__name__)

#: Header names on dead-letter records (values are UTF-8).
DLQ_REASON = "tandem-dlq-reason"
DLQ_ERROR = "tandem-dlq-error"
DLQ_TOPIC = "tandem-source-topic"
DLQ_PARTITION = "tandem-source-partition"
DLQ_OFFSET = "tandem-source-offset"
DLQ_TRUNCATED = "tandem-dlq-truncated"
_OURS = (DLQ_REASON, DLQ_ERROR, DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET)

MAX_ERROR_HEADER = 1024
"""Characters of the error message kept in the ``tandem-dlq-error`` header."""
MAX_TRUNCATED_KEY = 1024
"""Bytes of record key a truncated letter keeps (a longer key is dropped too)."""


class DeadLetterRefused(TandemError):
    """The dead-letter topic refused a letter for a reason retrying cannot fix. The consumer
    stops with the batch uncommitted, so nothing is lost: the next run replays it."""

    grpc_status = "FAILED_PRECONDITION"


@dataclass(frozen=True)
class DeadLetter:
    """A record bound for the dead-letter topic: its key and value as read, the reason in headers."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def letter_for(rec: Any, reason: str, error: str) -> DeadLetter:
    """The dead-letter copy of Kafka record ``rec``: the record itself, ``reason`` and the
    (bounded) ``error`` in headers, then the source coordinates and the record's own headers."""
    headers = [
        (DLQ_REASON, reason.encode("utf-8", "replace")),
        (DLQ_ERROR, error[:MAX_ERROR_HEADER].encode("utf-8", "replace")),
        (DLQ_TOPIC, rec.topic.encode()),
        (DLQ_PARTITION, str(rec.partition).encode()),
        (DLQ_OFFSET, str(rec.offset).encode()),
        *[(k, v) for k, v in (rec.headers or [])],
    ]
    return DeadLetter(rec.key, rec.value, headers)


def is_truncated(letter: DeadLetter) -> bool:
    """Whether ``letter`` was already cut down by :func:`truncated`."""
    return any(k == DLQ_TRUNCATED for k, _ in letter.headers)


def truncated(letter: DeadLetter) -> DeadLetter:
    """``letter`` without its value and the source's own headers (a long key goes too), with
    ``tandem-dlq-truncated`` = the value's size in bytes."""
    headers = [(k, v) for k, v in letter.headers if k in _OURS]
    headers.append((DLQ_TRUNCATED, str(len(letter.value or b"")).encode()))
    key = letter.key if letter.key is not None and len(letter.key) <= MAX_TRUNCATED_KEY else None
    return DeadLetter(key, b"", headers)


def _retry_or_raise(letter: DeadLetter, error: BaseException | None, topic: str) -> DeadLetter:
    """The letter to send again after ``error`` (``None``: the send itself could not start);
    raises :class:`DeadLetterRefused` when sending again cannot help."""
    from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

    if isinstance(error, MessageSizeTooLargeError) and not is_truncated(letter):
        log.warning("dead letter too large for `%s` (%s); sending it without its value", topic, error)
        metrics.EVENTS.labels("dlq_truncated").inc()
        return truncated(letter)
    if error is not None and not getattr(error, "retriable", False) and not isinstance(error, KafkaTimeoutError):
        raise DeadLetterRefused(
            f"the dead-letter topic `{topic}` refused a record: {type(error).__name__}: {str(error)[:300]}. "
            "Retrying cannot fix this: make sure the topic exists, grant the consumer's principal Write on it "
            "and let it accept records of this size (`max.message.bytes`), then restart the consumer; the "
            "batch's offsets stay uncommitted, so it is replayed"
        ) from error
    log.warning("dead-letter send failed (%s); retrying", error)
    return letter


def deliver(producer: Any, topic: str, letters: list[DeadLetter], stop: threading.Event, flush_s: float,
            renew: Callable[[Any], Any] | None = None) -> Any:
    """Send ``letters`` to ``topic`` and return once the broker acknowledged each (see the
    module docstring for what is retried, truncated or raised); returns the producer in use,
    which ``renew(old)`` replaced after a broker-side refusal. ``stop`` set during an outage
    raises :class:`Unavailable`, with the batch uncommitted, so the next owner replays it and
    dead-letters it again."""
    from kafka.errors import KafkaError, MessageSizeTooLargeError

    in_flight: list[tuple[DeadLetter, Any]] = []
    waiting = list(letters)
    while waiting or in_flight:
        metrics.LOOP.beat()
        for letter in waiting:
            try:
                in_flight.append((letter, producer.send(topic, key=letter.key, value=letter.value,
                                                        headers=letter.headers)))
            except KafkaError as e:  # no metadata within max_block_ms (broker away), or too large
                in_flight.append((_retry_or_raise(letter, e, topic), None))
        try:
            producer.flush(timeout=flush_s)
        except KafkaError as e:
            log.warning("dead-letter flush timed out (%s); waiting for the broker", e)
        refused = any(fut is not None and fut.is_done and isinstance(fut.exception, MessageSizeTooLargeError)
                      for _, fut in in_flight)
        waiting = [letter if fut is None else _retry_or_raise(letter, fut.exception, topic)
                   for letter, fut in in_flight if fut is None or (fut.is_done and fut.failed())]
        in_flight = [(letter, fut) for letter, fut in in_flight if fut is not None and not fut.is_done]
        if refused and renew is not None:
            log.warning("dead-letter producer replaced after a broker refusal; resending %d letters",
                        len(waiting) + len(in_flight))
            producer = renew(producer)
            waiting += [letter for letter, _ in in_flight]  # the old producer's sends are abandoned
            in_flight = []
        if waiting:
            log.warning("%d dead letters were not delivered; sending them again", len(waiting))
        if (waiting or in_flight) and stop.is_set():
            raise Unavailable(f"{len(waiting) + len(in_flight)} dead letters not acknowledged by Kafka at "
                              "shutdown; the batch's offsets stay uncommitted, so it is replayed")
    return producer
