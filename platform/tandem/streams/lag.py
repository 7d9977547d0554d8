"""Consumer lag, and a watchdog for partitions the Kafka client stopped fetching.

Every ``every_s`` seconds the ingest loop lets :class:`LagWatch` ask the broker for the end
offsets of the assigned partitions and compare them with the consumer's positions. The sum
is the consumer lag (``tandem_ingest_lag`` and the status line).

A partition with lag whose position has not moved across ``stall_checks`` checks in a row
is stalled: there are records the client should be fetching and it does not. kafka-python 3.x has had such stalls (a reset or offset
validation that ``poll`` schedules but never waits for, dpkp/kafka-python#3106 and #3131);
a CI run saw the chart's ingest pod assigned every partition of a topic holding 30 events
and fetch none for two minutes. Asking for the position (which waits for a pending reset or
validation) is the first remedy; a stall that outlives it is seeked to its own position,
which clears the partition's fetch state. The re-seek is logged and counted
(``tandem_ingest_stalls_total``); nothing is skipped or read twice, as the seek keeps the
position. A partition merely slow to drain (a backlog) moves between checks and is left alone;
at worst a false alarm refetches what the client had buffered.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

LAG = Gauge("tandem_ingest_lag", "Events on the assigned partitions not yet consumed (end offset - position).")
STALLS = Counter("tandem_ingest_stalls", "Partitions found with lag but no fetch progress and re-seeked.")
REBUILDS = Counter("tandem_ingest_client_rebuilds", "Kafka clients replaced after re-seeks did not unstick a partition.")

POSITION_TIMEOUT_MS = 2000
"""How long one position lookup may wait for a pending offset reset or validation."""
END_OFFSETS_TIMEOUT_MS = 2000
"""How long the end-offsets request may take: a broker outage must not hold up the loop."""


class LagWatch:
    """Lag of one consumer, checked while it is idle; re-seeks partitions that stopped fetching."""

    def __init__(self, every_s: float = 10.0, stall_checks: int = 2, rebuild_after: int = 2) -> None:
        if every_s <= 0 or stall_checks < 1 or rebuild_after < 1:
            raise ValueError("`every_s` must be > 0, `stall_checks` and `rebuild_after` >= 1")
        self.every_s = every_s
        self.stall_checks = stall_checks
        self.rebuild_after = rebuild_after
        self._reseeks: dict[Any, int] = {}  # partition -> re-seeks without progress since
        self.lag: int | None = None
        """Total lag at the last check; ``None`` before one succeeded."""
        self.stalls = 0
        self._next_at = time.monotonic() + every_s
        self._seen: dict[Any, tuple[int, int]] = {}  # partition -> (position, checks without progress)

    @property
    def rebuild_due(self) -> bool:
        """Whether a partition stayed stuck through ``rebuild_after`` re-seeks."""
        return any(n >= self.rebuild_after for n in self._reseeks.values())

    def reset(self) -> None:
        """Forget progress and stall counts (the consumer has a new client)."""
        self._seen.clear()
        self._reseeks.clear()
        self._next_at = time.monotonic() + self.every_s

    def maybe_check(self, kafka: Any) -> None:
        """Check now when ``every_s`` has passed since the last check (cheap otherwise: one clock read)."""
        if time.monotonic() >= self._next_at:
            self._next_at = time.monotonic() + self.every_s
            self.check(kafka)

    def check(self, kafka: Any) -> None:
        """One check of ``kafka`` (a ``KafkaConsumer``): lag per assigned partition, stalls re-seeked.

        A broker that cannot answer leaves the figures as they were (logged at debug level):
        the consume loop already reports an outage through its own retries.
        """
        from kafka.errors import KafkaError

        tps = sorted(kafka.assignment())
        if not tps:
            self._seen.clear()
            return
        try:
            ends = kafka.end_offsets(tps, timeout_ms=END_OFFSETS_TIMEOUT_MS)
            positions = {tp: kafka.position(tp, timeout_ms=POSITION_TIMEOUT_MS) for tp in tps}
        except KafkaError as e:
            log.debug("lag check skipped: %s", e)
            return
        lag, paused = 0, set(kafka.paused())  # a paused partition is not fetched on purpose
        for tp in tps:
            end, pos = ends.get(tp), positions[tp]
            if end is None or pos is None:
                continue
            behind = max(0, end - pos)
            lag += behind
            before, checks = self._seen.get(tp, (pos, 0))
            checks = checks + 1 if behind and pos == before and tp not in paused else 0
            if checks == 0:
                self._reseeks.pop(tp, None)
            if checks >= self.stall_checks:
                log.warning("%s[%d]: %d events behind at offset %d with no fetch progress over %d checks; "
                            "re-seeking to %d", tp.topic, tp.partition, behind, pos, checks, pos)
                kafka.seek(tp, pos)
                self._reseeks[tp] = self._reseeks.get(tp, 0) + 1
                self.stalls += 1
                STALLS.inc()
                checks = 0
            self._seen[tp] = (pos, checks)
        self._seen = {tp: v for tp, v in self._seen.items() if tp in tps}
        self._reseeks = {tp: n for tp, n in self._reseeks.items() if tp in tps}
        self.lag = lag
        LAG.set(lag)


def client_states(kafka: Any) -> dict[str, Any]:
    """The client's own state of each assigned partition (kafka-python internals: position,
    highwater, reset and validation flags), for the log line of a stuck client."""
    assignment = getattr(getattr(kafka, "_subscription", None), "assignment", {})
    out: dict[str, Any] = {}
    for tp in sorted(kafka.assignment()):
        state = assignment.get(tp)
        out[f"{tp.topic}[{tp.partition}]"] = dict(vars(state)) if state is not None else None
    return out
