"""Per-source circuit breakers of the hybrid searcher: a dead source costs no latency.

Without them every search waits for a failing source until its error or the deadline (a
retriever pod that is down, a model server stuck on a GPU): each search pays that wait and
keeps hammering the source while it recovers. With them, a source that failed
``failure_threshold`` times in a row is skipped for ``reset_after_s`` (the result says
``<source>: circuit open``, degraded, from the other sources), then one search probes it:
success closes the circuit, failure opens it again. The breaker is the Redis cache's
(:class:`tandem.cache.breaker.CircuitBreaker`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future

from prometheus_client import Counter

from tandem.cache.breaker import CircuitBreaker
from tandem.errors import InvalidInput

SKIPPED = Counter(
    "tandem_source_circuit_open_total", "Source calls skipped by the hybrid searcher because the source's circuit "
    "was open (it failed repeatedly; probed again after the cool-down).", ["source"])


class SourceBreakers:
    """One :class:`CircuitBreaker` per source name; ``failure_threshold == 0`` turns them off."""

    def __init__(self, names: Iterable[str], failure_threshold: int = 5, reset_after_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failure_threshold < 0:
            raise InvalidInput(f"`failure_threshold` must be >= 0, got {failure_threshold}")
        self.failure_threshold = failure_threshold
        self._breakers = {} if failure_threshold == 0 else {
            n: CircuitBreaker(failure_threshold, reset_after_s, clock=clock) for n in names}

    def allow(self, name: str, reasons: list[str]) -> bool:
        """Whether to call source ``name`` now; when not, a degraded reason is added."""
        breaker = self._breakers.get(name)
        if breaker is None or breaker.allow():
            return True
        SKIPPED.labels(name).inc()
        reasons.append(f"{name}: circuit open ({self.failure_threshold} failures in a row; "
                       f"probed again within {breaker.reset_after_s:g} s)")
        return False

    def state(self, name: str) -> str:
        """``closed``, ``open`` or ``half-open`` (``closed`` when breakers are off)."""
        breaker = self._breakers.get(name)
        return breaker.state if breaker is not None else "closed"

    def settle(self, calls: Mapping[Future, str], done: set[Future]) -> None:
        """Record every call's outcome: no answer in time or an error is a failure; an answer,
        or a refusal of the request itself (:class:`InvalidInput`), a success. Every allowed call
        must be settled, or a half-open probe would stay in flight for ever."""
        for fut, name in calls.items():
            breaker = self._breakers.get(name)
            if breaker is None:
                continue
            exc = fut.exception() if fut in done else None
            if fut not in done or (exc is not None and not isinstance(exc, InvalidInput)):
                breaker.record_failure()
            else:
                breaker.record_success()


__all__ = ["SKIPPED", "SourceBreakers"]
