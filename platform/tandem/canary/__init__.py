"""Canary and A/B between two served versions: routing by a stable hash (:mod:`.arms`),
evidence from feedback (:mod:`.evidence`), significance tests (:mod:`.stats`) and the
controller that moves the share and rolls back (:mod:`.controller`)."""

from tandem.canary.arms import CANDIDATE, CURRENT, INTERLEAVED, ArmControl, Arms, ArmWindow, bucket
from tandem.canary.controller import CanaryController, CanaryOutcome, CanaryPolicy, Decision, judge
from tandem.canary.evidence import QualityEvidence, read_evidence, split_evidence

__all__ = [
    "CANDIDATE", "CURRENT", "INTERLEAVED", "ArmControl", "ArmWindow", "Arms", "CanaryController", "CanaryOutcome",
    "CanaryPolicy", "Decision", "QualityEvidence", "bucket", "judge", "read_evidence",
    "split_evidence",
]
