"""A circuit breaker, so a dead dependency costs no latency after the first few failures."""

from __future__ import annotations

import threading
import time

from tandem.errors import InvalidInput


class CircuitBreaker:
    """Closed → (``failure_threshold`` consecutive failures) → open for ``reset_after_s`` →
    half-open (one trial call) → closed on success, open again on failure.

    While open, :meth:`allow` answers ``False`` at no cost, so callers skip the dependency
    instead of waiting for a connect timeout on every request.
    """

    def __init__(self, failure_threshold: int = 3, reset_after_s: float = 5.0, clock=time.monotonic) -> None:
        if failure_threshold < 1:
            raise InvalidInput(f"`failure_threshold` must be >= 1, got {failure_threshold}")
        if not reset_after_s > 0:
            raise InvalidInput(f"`reset_after_s` must be > 0, got {reset_after_s}")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False
        self._mu = threading.Lock()

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        with self._mu:
            if self._opened_at is None:
                return "closed"
            return "half-open" if self._clock() - self._opened_at >= self.reset_after_s else "open"

    def allow(self) -> bool:
        """Whether to try the dependency now (in half-open state, one caller at a time)."""
        with self._mu:
            if self._opened_at is None:
                return True
            if self._clock() - self._opened_at < self.reset_after_s or self._trial_in_flight:
                return False
            self._trial_in_flight = True
            return True

    def record_success(self) -> None:
        """The call worked: close the circuit."""
        with self._mu:
            self._failures = 0
            self._opened_at = None
            self._trial_in_flight = False

    def record_failure(self) -> None:
        """The call failed: count it, open (or re-open) the circuit at the threshold."""
        with self._mu:
            self._failures += 1
            if self._trial_in_flight or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
            self._trial_in_flight = False
