"""Quality evidence from the feedback store: click-through per arm (split traffic) and
interleaving preferences (interleaved traffic).

A request counts once its impressions (or clicks) arrived. Its events carry each hit's arm:
a request whose events name both arms was interleaved, and its clicks are votes (more clicks
on the candidate's items = a win for the candidate, fewer = a loss, equal = a tie); a request
whose events name one arm was served by that arm, and it is *clicked* when any of its events
is a click (CTR = clicked requests / requests). Events without an arm are left out.

Without a feedback store (``tandem canary`` against gateways only), :func:`split_evidence`
takes the same split-traffic CTR counts from the gateways' windows, which their
``FeedbackService`` fills; interleaving preferences need the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tandem.canary.arms import CANDIDATE, CURRENT, ArmWindow
from tandem.feedback.store import FeedbackStore


@dataclass
class QualityEvidence:
    """Counts the controller tests; see the module docstring."""

    requests: dict[str, int] = field(default_factory=lambda: {CURRENT: 0, CANDIDATE: 0})
    """Split requests per arm."""
    clicked: dict[str, int] = field(default_factory=lambda: {CURRENT: 0, CANDIDATE: 0})
    """Split requests per arm with at least one click."""
    candidate_wins: int = 0
    """Interleaved requests whose clicks favoured the candidate."""
    current_wins: int = 0
    """Interleaved requests whose clicks favoured current."""
    ties: int = 0
    """Interleaved requests with equal clicks (none included)."""

    @property
    def interleaved(self) -> int:
        """Interleaved requests seen."""
        return self.candidate_wins + self.current_wins + self.ties

    def ctr(self, arm: str) -> float:
        """Clicked requests / requests of ``arm`` (0 without requests)."""
        return self.clicked[arm] / self.requests[arm] if self.requests[arm] else 0.0


def read_evidence(store: FeedbackStore, since_seq: int = 0) -> QualityEvidence:
    """Evidence from the events after ``since_seq`` (group by request; see the module docstring)."""
    arms: dict[str, set[str]] = {}
    clicks: dict[str, dict[str, int]] = {}
    for _, e in store.events(since_seq):
        if e.arm not in (CURRENT, CANDIDATE):
            continue
        arms.setdefault(e.request_id, set()).add(e.arm)
        per = clicks.setdefault(e.request_id, {CURRENT: 0, CANDIDATE: 0})
        if e.kind == "click":
            per[e.arm] += 1
    ev = QualityEvidence()
    for rid, seen in arms.items():
        c = clicks[rid]
        if len(seen) == 2:
            if c[CANDIDATE] > c[CURRENT]:
                ev.candidate_wins += 1
            elif c[CURRENT] > c[CANDIDATE]:
                ev.current_wins += 1
            else:
                ev.ties += 1
        else:
            (arm,) = seen
            ev.requests[arm] += 1
            ev.clicked[arm] += int(c[arm] > 0)
    return ev


def split_evidence(windows: Mapping[str, ArmWindow]) -> QualityEvidence:
    """Split-traffic CTR evidence from per-arm windows (:meth:`~tandem.canary.arms.Arms.record_feedback`)."""
    ev = QualityEvidence()
    for arm in (CURRENT, CANDIDATE):
        w = windows.get(arm, ArmWindow())
        ev.requests[arm], ev.clicked[arm] = w.feedback_requests, w.clicked_requests
    return ev
