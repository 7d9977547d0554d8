"""Which arm serves a request, and each arm's live health (the canary's guardrails).

A gateway serves a *current* and a *candidate* searcher side by side. :class:`Arms` picks the
arm of each request by a stable hash of ``user_id`` (the request id when there is none), so a
user sees one version for the whole experiment, and raising the share only moves more users
to the candidate (a user's bucket below 1% is also below 10%). In ``interleave`` mode the
chosen users get one team-draft interleaved list of both arms instead (:mod:`tandem.interleave`).

Every request is counted per arm (latency, errors, degraded answers, empty answers) in
Prometheus metrics labelled ``arm`` and in a resettable window the canary controller reads;
the gateway's ``FeedbackService`` adds each split request's feedback to its arm's window
(requests with feedback, requests with a click: the arm's CTR, :meth:`Arms.record_feedback`).
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

from prometheus_client import Counter, Gauge, Histogram

from tandem.canary.stats import percentile
from tandem.errors import InvalidInput

CURRENT = "current"
CANDIDATE = "candidate"
INTERLEAVED = "interleaved"
"""The ``arm`` of a response whose hits come from both arms (each hit names its own)."""
Mode = Literal["split", "interleave"]
MODES: tuple[str, ...] = ("split", "interleave")

ARM_REQUESTS = Counter("tandem_arm_requests_total", "Searches per arm and outcome (ok, error).", ["arm", "outcome"])
ARM_LATENCY = Histogram("tandem_arm_latency_seconds", "Search latency per arm.", ["arm"],
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
ARM_DEGRADED = Counter("tandem_arm_degraded_total", "Searches per arm answered with a source missing.", ["arm"])
ARM_ZERO = Counter("tandem_arm_zero_results_total", "Searches per arm that found nothing.", ["arm"])
CANARY_SHARE = Gauge("tandem_canary_share", "Share of users routed to the candidate (or to interleaving).")
CANARY_INTERLEAVING = Gauge("tandem_canary_interleaving", "1 while the chosen users get interleaved lists.")

WINDOW = 20_000
"""Latencies kept per arm for the controller's percentiles."""


def bucket(key: str, salt: str = "") -> float:
    """A stable number in [0, 1) for ``key`` (BLAKE2b; the same on every replica and restart)."""
    digest = hashlib.blake2b((salt + "\x00" + key).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True, slots=True)
class ArmWindow:
    """One arm's counts since the window was last reset."""

    requests: int = 0
    errors: int = 0
    degraded: int = 0
    zero_results: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    feedback_requests: int = 0
    """Split requests of this arm whose feedback arrived."""
    clicked_requests: int = 0
    """Of those, the ones with at least one click."""

    @property
    def error_rate(self) -> float:
        """Errors per request (0 without requests)."""
        return self.errors / self.requests if self.requests else 0.0

    @property
    def ctr(self) -> float:
        """Clicked requests / requests with feedback (0 without feedback)."""
        return self.clicked_requests / self.feedback_requests if self.feedback_requests else 0.0


class ArmControl(Protocol):
    """What the canary controller needs from a gateway (in-process :class:`Arms`, or a client)."""

    def set_plan(self, share: float, mode: str) -> None:
        """Route ``share`` of users to the candidate (``split``) or to interleaving."""
        ...

    def windows(self) -> dict[str, ArmWindow]:
        """Each arm's counts since the last :meth:`reset_windows`."""
        ...

    def reset_windows(self) -> None:
        """Start new windows (at a stage change)."""
        ...


class _Window:
    def __init__(self) -> None:
        self.requests = self.errors = self.degraded = self.zero = 0
        self.feedback = self.clicked = 0
        self.latencies: deque[float] = deque(maxlen=WINDOW)


class Arms:
    """Routing and live counts of the two arms; thread-safe. Implements :class:`ArmControl`."""

    def __init__(self, share: float = 0.0, mode: str = "split", *, salt: str = "tandem-canary") -> None:
        self.salt = salt
        self._mu = threading.Lock()
        self._plan: tuple[float, str] = (0.0, "split")
        self._windows = {CURRENT: _Window(), CANDIDATE: _Window()}
        self.set_plan(share, mode)

    @property
    def share(self) -> float:
        """Share of users routed away from plain ``current``."""
        return self._plan[0]

    @property
    def mode(self) -> str:
        """``split`` or ``interleave``."""
        return self._plan[1]

    def set_plan(self, share: float, mode: str | None = None) -> None:
        """Change the share (and mode) at once for every later request."""
        mode = self.mode if mode is None else mode
        if not 0.0 <= share <= 1.0:
            raise InvalidInput(f"`share` must be in 0..1, got {share}")
        if mode not in MODES:
            raise InvalidInput(f"`mode` must be one of {', '.join(MODES)}, got {mode!r}")
        self._plan = (float(share), mode)  # one tuple: readers never see a half-changed plan
        CANARY_SHARE.set(share)
        CANARY_INTERLEAVING.set(1 if mode == "interleave" else 0)

    def route(self, user_id: str, request_id: str) -> str:
        """:data:`CURRENT`, :data:`CANDIDATE` or :data:`INTERLEAVED` for this request."""
        share, mode = self._plan
        if share <= 0.0 or bucket(user_id or request_id, self.salt) >= share:
            return CURRENT
        return INTERLEAVED if mode == "interleave" else CANDIDATE

    def record(self, arm: str, latency_s: float, *, error: bool = False, degraded: bool = False,
               hits: int = 1) -> None:
        """Count one search of ``arm`` (Prometheus and the controller's window)."""
        ARM_REQUESTS.labels(arm, "error" if error else "ok").inc()
        ARM_LATENCY.labels(arm).observe(latency_s)
        zero = not error and hits == 0
        if degraded:
            ARM_DEGRADED.labels(arm).inc()
        if zero:
            ARM_ZERO.labels(arm).inc()
        with self._mu:
            w = self._windows[arm]
            w.requests += 1
            w.errors += int(error)
            w.degraded += int(degraded)
            w.zero += int(zero)
            w.latencies.append(latency_s)

    def record_feedback(self, arm: str, *, new_request: bool, new_click: bool) -> None:
        """Count a split request's first feedback (``new_request``) and its first click (``new_click``)."""
        if arm not in (CURRENT, CANDIDATE):
            raise InvalidInput(f"`arm` must be {CURRENT} or {CANDIDATE}, got {arm!r}")
        with self._mu:
            w = self._windows[arm]
            w.feedback += int(new_request)
            w.clicked += int(new_click)

    def windows(self) -> dict[str, ArmWindow]:
        """Counts and latency percentiles per arm since the last reset."""
        with self._mu:
            raw = {arm: (w.requests, w.errors, w.degraded, w.zero, list(w.latencies), w.feedback, w.clicked)
                   for arm, w in self._windows.items()}
        return {arm: ArmWindow(r, e, d, z, percentile(lat, 0.5) * 1000, percentile(lat, 0.99) * 1000, f, c)
                for arm, (r, e, d, z, lat, f, c) in raw.items()}

    def reset_windows(self) -> None:
        """Start new windows."""
        with self._mu:
            self._windows = {CURRENT: _Window(), CANDIDATE: _Window()}
