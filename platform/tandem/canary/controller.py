"""The canary controller: move the candidate's share through the stages (1% → 10% → 50% →
100% by default) and roll back when it is worse.

At every stage the controller waits for enough traffic on the candidate, then judges:

* **guardrails** (from the gateway's per-arm windows, :class:`~tandem.canary.arms.ArmWindow`):
  the candidate's error rate may exceed current's by at most ``max_error_rate_increase``, and
  its p99 latency may be at most ``max_p99_ratio`` × current's + ``p99_slack_ms``;
* **quality** (from feedback, :class:`~tandem.canary.evidence.QualityEvidence`): in
  ``interleave`` mode an exact sign test over the interleaved requests' preferences, in
  ``split`` mode a two-proportion z-test of the arms' click-through rates. A candidate that
  is worse at significance ``alpha`` is rolled back at once, whatever the stage's progress.

Any failed check rolls back (share 0). A stage passes when the candidate served
``min_requests`` requests and ``min_quality`` requests carry feedback, without a failed check
and without the candidate trailing (a trailing candidate holds for more evidence, up to
``max_quality``);
the last stage is the promotion itself (the candidate serves everyone, split mode), since no
comparison is left to make there. The tests are re-run as evidence arrives (sequential
looks), which is why ``alpha`` defaults to 0.01 rather than 0.05.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tandem.canary.arms import CANDIDATE, CURRENT, ArmControl, ArmWindow
from tandem.canary.evidence import QualityEvidence
from tandem.canary.stats import sign_test, two_proportion_test

log = logging.getLogger(__name__)


class CanaryPolicy(BaseModel):
    """Stages and thresholds of a canary (the chart's ``canary`` values)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stages: tuple[float, ...] = (0.01, 0.10, 0.50, 1.0)
    """Shares of users, increasing; the last must be 1.0 (the promotion)."""
    mode: Literal["split", "interleave"] = "interleave"
    """How quality is compared before the promotion: interleaved lists or split traffic."""
    min_requests: int = Field(default=20, ge=1)
    """Candidate requests a stage needs before it can pass (guardrails are judged from then)."""
    min_quality: int = Field(default=150, ge=1)
    """Requests with feedback a stage needs before it can pass: interleaved ones, or the
    candidate's split ones."""
    alpha: float = Field(default=0.01, gt=0, lt=1)
    """Significance level of the quality tests."""
    max_error_rate_increase: float = Field(default=0.01, ge=0)
    """Most the candidate's error rate may exceed current's."""
    max_p99_ratio: float = Field(default=1.5, ge=1)
    """Most the candidate's p99 latency may be, as a multiple of current's (plus the slack)."""
    p99_slack_ms: float = Field(default=25.0, ge=0)
    """Absolute latency allowance added to the ratio (small p99s are noisy)."""
    max_quality: int = Field(default=2000, ge=1)
    """A stage whose candidate trails current (fewer interleaving wins, lower CTR) without
    significance holds until this many requests carry feedback, then passes as not detectably
    worse: the share never grows on evidence that points the wrong way (bench.canary: with
    ``min_quality`` 20 a worse candidate trailing 12 vs 7 at 10 % went on to 50 %)."""
    min_latency_requests: int = Field(default=200, ge=1)
    """Requests each arm needs before the p99 guardrail is judged: a p99 of fewer is about its
    maximum, one slow outlier (seen in bench.canary: a 10-request p99 of 195 ms vs 71 ms)."""

    @field_validator("stages")
    @classmethod
    def _stages(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not 0 < s <= 1 for s in v) or list(v) != sorted(set(v)) or v[-1] != 1.0:
            raise ValueError("`stages` must be increasing shares in (0, 1] ending with 1.0")
        return v


Action = Literal["hold", "advance", "rollback", "promoted"]


@dataclass(frozen=True)
class Decision:
    """One judgement of the controller."""

    action: Action
    share: float
    """The share in force after the decision."""
    reason: str = ""


@dataclass
class CanaryOutcome:
    """How a canary run ended."""

    final_share: float
    rolled_back_at: float | None = None
    """The share at which the candidate was rolled back (``None``: it was not)."""
    decisions: list[Decision] = field(default_factory=list)


def judge(policy: CanaryPolicy, windows: dict[str, ArmWindow], quality: QualityEvidence) -> tuple[Action, str]:
    """``rollback``, ``advance`` or ``hold`` for the evidence of one stage (see the module docstring)."""
    cand, cur = windows.get(CANDIDATE, ArmWindow()), windows.get(CURRENT, ArmWindow())
    if cand.requests >= policy.min_requests:
        if cand.error_rate > cur.error_rate + policy.max_error_rate_increase:
            return "rollback", f"error rate {cand.error_rate:.3f} vs current {cur.error_rate:.3f}"
        limit = cur.p99_ms * policy.max_p99_ratio + policy.p99_slack_ms
        enough = min(cand.requests, cur.requests) >= policy.min_latency_requests
        if enough and cand.p99_ms > limit:
            return "rollback", f"p99 {cand.p99_ms:.1f} ms > {limit:.1f} ms (current {cur.p99_ms:.1f} ms)"
    if policy.mode == "interleave":
        p = sign_test(quality.candidate_wins, quality.current_wins)
        if quality.current_wins > quality.candidate_wins and p < policy.alpha:
            return "rollback", (f"interleaving prefers current: {quality.current_wins} vs "
                                f"{quality.candidate_wins} wins (p={p:.2g})")
        have, behind = quality.interleaved, quality.current_wins > quality.candidate_wins
    else:
        z, p = two_proportion_test(quality.clicked[CURRENT], quality.requests[CURRENT],
                                   quality.clicked[CANDIDATE], quality.requests[CANDIDATE])
        if z < 0 and p < policy.alpha:
            return "rollback", (f"CTR {quality.ctr(CANDIDATE):.3f} vs current {quality.ctr(CURRENT):.3f} "
                                f"(p={p:.2g})")
        have, behind = quality.requests[CANDIDATE], z < 0
    if cand.requests >= policy.min_requests and have >= policy.min_quality:
        if behind and have < policy.max_quality:
            return "hold", (f"the candidate trails current, not significantly yet (p={p:.2g}, {have} with "
                            f"feedback): more evidence before a larger share, up to {policy.max_quality}")
        return "advance", f"{cand.requests} candidate requests, {have} with feedback, no check failed"
    return "hold", f"{cand.requests}/{policy.min_requests} candidate requests, {have}/{policy.min_quality} with feedback"


class CanaryController:
    """Drives an :class:`ArmControl` through the policy's stages.

    ``evidence(since)`` returns the quality evidence after feedback position ``since``, and
    ``position()`` the current position (the feedback store's ``seq``); each stage reads only
    its own feedback and its own guardrail window.
    """

    def __init__(self, policy: CanaryPolicy, arms: ArmControl, evidence: Callable[[int], QualityEvidence],
                 position: Callable[[], int]) -> None:
        self.policy, self.arms, self._evidence, self._position = policy, arms, evidence, position
        self.stage = -1
        self.share = 0.0
        self.done = False
        self.outcome = CanaryOutcome(final_share=0.0)
        self._since = 0

    def start(self) -> Decision:
        """Enter the first stage."""
        return self._enter(0, "start")

    def _enter(self, stage: int, reason: str) -> Decision:
        self.stage = stage
        share = self.policy.stages[stage]
        self._since = self._position()
        self.arms.reset_windows()
        if stage == len(self.policy.stages) - 1:  # the promotion: the candidate serves everyone
            self.arms.set_plan(share, "split")
            self.share, self.done = share, True
            self.outcome.final_share = share
            return self._log(Decision("promoted", share, reason))
        self.arms.set_plan(share, self.policy.mode)
        self.share = share
        self.outcome.final_share = share
        return self._log(Decision("advance", share, reason))

    def step(self) -> Decision:
        """Judge the current stage once and act on it."""
        if self.done:
            return Decision("promoted" if self.outcome.rolled_back_at is None else "rollback", self.share)
        if self.stage < 0:
            return self.start()
        action, reason = judge(self.policy, self.arms.windows(), self._evidence(self._since))
        if action == "rollback":
            self.outcome.rolled_back_at = self.share
            self.arms.set_plan(0.0, "split")
            self.share, self.done, self.outcome.final_share = 0.0, True, 0.0
            return self._log(Decision("rollback", 0.0, reason))
        if action == "advance":
            return self._enter(self.stage + 1, reason)
        return Decision("hold", self.share, reason)

    def run(self, *, poll_s: float = 5.0, timeout_s: float | None = None,
            sleep: Callable[[float], None] = time.sleep) -> CanaryOutcome:
        """Step every ``poll_s`` seconds until promoted, rolled back or ``timeout_s`` (then the
        share stays where it is: a stuck canary is for a person to judge)."""
        started = time.monotonic()
        while not self.done:
            self.step()
            if self.done or (timeout_s is not None and time.monotonic() - started > timeout_s):
                break
            sleep(poll_s)
        return self.outcome

    def _log(self, decision: Decision) -> Decision:
        self.outcome.decisions.append(decision)
        log.info("canary %s: share %.2f (%s)", decision.action, decision.share, decision.reason)
        return decision
