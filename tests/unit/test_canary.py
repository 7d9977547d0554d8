"""Canary and A/B core (issue 21): feedback validation and store, stable routing, team-draft
interleaving, the significance tests and the controller's stage decisions."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tandem.canary import CANDIDATE, CURRENT, INTERLEAVED, Arms, ArmWindow, CanaryController, CanaryPolicy, judge
from tandem.canary.evidence import QualityEvidence, read_evidence
from tandem.canary.stats import sign_test, two_proportion_test
from tandem.feedback import FeedbackError, FeedbackEvent, FeedbackStore, decode_feedback, encode_feedback, validate_feedback
from tandem.interleave import TEAM_A, TEAM_B, credit, team_draft

NOW = 1_800_000_000.0


def _fields(**kw):  # type: ignore[no-untyped-def]
    return {"request_id": "r1", "user_id": "u", "item_id": "i1", "kind": "click", "position": 3, "ts": NOW, **kw}


@pytest.mark.parametrize(("bad", "field"), [
    ({"request_id": None}, "`request_id`"), ({"item_id": "x" * 200}, "`item_id`"), ({"kind": "view"}, "`kind`"),
    ({"position": True}, "`position`"), ({"position": 1001}, "`position`"), ({"ts": float("nan")}, "`ts`"),
    ({"ts": NOW + 3600}, "`ts`"), ({"ts": 12.0}, "`ts`"), ({"user_id": "a\x00b"}, "`user_id`"),
    ({"arm": "b"}, "`arm`"), ({"colour": 1}, "colour"),
])
def test_bad_feedback_names_the_field(bad: dict, field: str) -> None:
    with pytest.raises(FeedbackError) as caught:
        validate_feedback(_fields(**bad), now=NOW)
    assert field in str(caught.value)


def test_the_codec_round_trips_and_equal_events_share_an_id() -> None:
    event = validate_feedback(_fields(arm="candidate"), now=NOW)
    key, value = encode_feedback(event)
    assert key == b"r1" and decode_feedback(key, value) == event
    assert validate_feedback(_fields(arm=""), now=NOW).event_id == event.event_id  # the arm is a label
    assert validate_feedback(_fields(position=4), now=NOW).event_id != event.event_id
    for raw in (b"{", b"[1]", None):
        with pytest.raises(FeedbackError):
            decode_feedback(b"r1", raw)


def test_the_store_keeps_each_event_once(tmp_path: Path) -> None:
    events = [validate_feedback(_fields(position=p), now=NOW) for p in (1, 2)]
    with FeedbackStore(tmp_path / "f.sqlite") as store:
        assert store.add(events) == (2, 0)
        assert store.add(events + [events[0]]) == (0, 3)
        assert store.counts() == {"events": 2, "requests": 1, "click": 2} and store.seq == 2


def test_routing_is_stable_monotone_and_close_to_the_share() -> None:
    arms = Arms(share=0.1, mode="split")
    users = [f"user-{i}" for i in range(20_000)]
    at_10 = {u for u in users if arms.route(u, "r") == CANDIDATE}
    assert abs(len(at_10) / len(users) - 0.1) < 0.01
    assert at_10 == {u for u in users if Arms(share=0.1).route(u, "other-request") == CANDIDATE}
    arms.set_plan(0.5, "interleave")
    at_50 = {u for u in users if arms.route(u, "r") == INTERLEAVED}
    assert at_10 < at_50
    assert Arms(share=0.0).route("", "req") == CURRENT
    assert len({Arms(share=0.5).route("", f"req-{i}") for i in range(50)}) == 2  # no user: the request decides


def test_team_draft_takes_turns_without_duplicates_and_credits_clicks() -> None:
    a, b = ["1", "2", "3", "4"], ["3", "5", "1", "6"]
    for seed in range(20):
        merged = team_draft(a, b, 6, random.Random(seed))
        ids = [i for i, _ in merged]
        assert len(ids) == len(set(ids)) == 6
        teams = [t for _, t in merged]
        for n in range(2, 7, 2):  # after every pair of picks, both teams have picked equally often
            assert teams[:n].count(TEAM_A) == teams[:n].count(TEAM_B)
        first_a = next(i for i, t in merged if t == TEAM_A)
        assert first_a == "1" or (first_a == "2" and merged[0] == ("1", TEAM_B)) or first_a == "3"
    assert credit({"1": TEAM_A, "5": TEAM_B, "6": TEAM_B}, ["5", "6", "9"]) == (0, 2)


def test_significance_tests() -> None:
    assert sign_test(0, 0) == 1.0 and sign_test(5, 5) == 1.0
    assert sign_test(2, 10) == pytest.approx(0.0386, abs=1e-3)  # scipy.stats.binomtest(2, 12).pvalue
    z, p = two_proportion_test(300, 1000, 250, 1000)
    assert z < 0 and p == pytest.approx(0.0127, abs=1e-3)


POLICY = CanaryPolicy(mode="interleave", min_requests=10, min_quality=30, alpha=0.01, min_latency_requests=10)
OK = {CURRENT: ArmWindow(requests=100, p99_ms=20.0), CANDIDATE: ArmWindow(requests=10, p99_ms=22.0)}


def test_judge_rolls_back_on_errors_latency_and_significant_preference() -> None:
    even = QualityEvidence(candidate_wins=15, current_wins=15)
    assert judge(POLICY, OK, even)[0] == "advance"
    assert judge(POLICY, {**OK, CANDIDATE: ArmWindow(requests=5)}, even)[0] == "hold"
    assert judge(POLICY, {**OK, CANDIDATE: ArmWindow(requests=10, errors=1, p99_ms=20)}, even)[0] == "rollback"
    assert judge(POLICY, {**OK, CANDIDATE: ArmWindow(requests=10, p99_ms=80.0)}, even)[0] == "rollback"
    noisy = POLICY.model_copy(update={"min_latency_requests": 11})  # too few requests for a p99
    assert judge(noisy, {**OK, CANDIDATE: ArmWindow(requests=10, p99_ms=80.0)}, even)[0] == "advance"
    action, reason = judge(POLICY, OK, QualityEvidence(candidate_wins=2, current_wins=20))
    assert action == "rollback" and "interleaving prefers current" in reason
    assert judge(POLICY, OK, QualityEvidence(candidate_wins=25, current_wins=5))[0] == "advance"
    trailing = QualityEvidence(candidate_wins=12, current_wins=19)  # worse, not significantly (p 0.28)
    action, reason = judge(POLICY, OK, trailing)
    assert action == "hold" and "trails" in reason
    assert judge(POLICY.model_copy(update={"max_quality": 31}), OK, trailing)[0] == "advance"
    split = POLICY.model_copy(update={"mode": "split"})
    worse = QualityEvidence(requests={CURRENT: 1000, CANDIDATE: 1000}, clicked={CURRENT: 400, CANDIDATE: 300})
    assert judge(split, OK, worse)[0] == "rollback"


class FakeGateway:
    def __init__(self) -> None:
        self.plans: list[tuple[float, str]] = []

    def set_plan(self, share: float, mode: str) -> None:
        self.plans.append((share, mode))

    def windows(self) -> dict[str, ArmWindow]:
        return OK

    def reset_windows(self) -> None:
        pass


@pytest.mark.parametrize(("wins", "final", "rolled_back_at"), [((15, 15), 1.0, None), ((2, 25), 0.0, 0.01)])
def test_the_controller_walks_the_stages_or_rolls_back(wins: tuple[int, int], final: float,
                                                       rolled_back_at: float | None) -> None:
    gw = FakeGateway()
    evidence = QualityEvidence(candidate_wins=wins[0], current_wins=wins[1])
    outcome = CanaryController(POLICY, gw, lambda since: evidence, lambda: 0).run(poll_s=0, timeout_s=5)
    assert outcome.final_share == final and outcome.rolled_back_at == rolled_back_at
    if rolled_back_at is None:
        assert gw.plans == [(0.01, "interleave"), (0.1, "interleave"), (0.5, "interleave"), (1.0, "split")]
    else:
        assert gw.plans == [(0.01, "interleave"), (0.0, "split")]


def test_evidence_groups_feedback_by_request(tmp_path: Path) -> None:
    def ev(rid: str, item: str, kind: str, arm: str) -> FeedbackEvent:
        return FeedbackEvent(rid, "u", item, kind, 1, time.time(), arm)

    with FeedbackStore(tmp_path / "f.sqlite") as store:
        store.add([ev("s1", "a", "impression", CURRENT), ev("s1", "a", "click", CURRENT),
                   ev("s2", "b", "impression", CANDIDATE),
                   ev("i1", "a", "impression", CURRENT), ev("i1", "b", "impression", CANDIDATE),
                   ev("i1", "b", "click", CANDIDATE), ev("i2", "a", "impression", CURRENT),
                   ev("i2", "b", "impression", CANDIDATE), ev("x", "c", "click", "")])
        got = read_evidence(store)
        assert got.requests == {CURRENT: 1, CANDIDATE: 1} and got.clicked == {CURRENT: 1, CANDIDATE: 0}
        assert (got.candidate_wins, got.current_wins, got.ties) == (1, 0, 1)
        assert read_evidence(store, since_seq=store.seq).interleaved == 0
