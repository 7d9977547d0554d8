"""Fitting profile weights on logged clicks (issue 22): the click model separates what a
profile feature does to clicks from what the position does."""

from __future__ import annotations

import math
import random

import pytest

from tandem.errors import InvalidInput
from tandem.fusion.base import FusedHit
from tandem.personal.fit import fit_weights
from tandem.personal.rerank import Session

#: Click odds by position relative to position 1, roughly what bench.feedback's cascade gives.
EXAM = [0.0, -0.6, -1.2, -1.8, -2.2, -2.6, -2.8, -3.2, -3.3, -3.4]


def _top10(s: int, rng: random.Random, feature_at_top: bool) -> tuple[list[FusedHit], dict[str, dict[str, float]]]:
    """Session ``s``'s shown top 10 and their profile scores: ``profile_prefix1`` drawn per
    position (mostly in the top 3 when ``feature_at_top``, else with probability 0.5)."""
    fused, scores = [], {}
    for pos in range(10):
        item = f"s{s}i{pos}"
        p_feature = (0.9 if pos < 3 else 0.1) if feature_at_top else 0.5
        fused.append(FusedHit(item, 1.0 / (pos + 1), ()))
        scores[item] = {"profile_sim": 0.0, "profile_prefix1": float(rng.random() < p_feature), "profile_prefix2": 0.0}
    return fused, scores


def _sessions(n: int, beta: float, feature_at_top: bool, seed: int = 7) -> list[Session]:
    """``n`` shown top-10s (:func:`_top10`), clicks from ``logit = 0.3 + EXAM[pos] + beta · prefix1``."""
    rng = random.Random(seed)
    out = []
    for s in range(n):
        fused, scores = _top10(s, rng, feature_at_top)
        gains = {h.item_id: 1.0 for pos, h in enumerate(fused)
                 if rng.random() < 1 / (1 + math.exp(-(0.3 + EXAM[pos] + beta * scores[h.item_id]["profile_prefix1"])))}
        out.append(Session(fused, scores, gains))
    return out


def test_recovers_the_click_effect_of_a_profile_feature():
    weights, fit = fit_weights(_sessions(3000, beta=1.0, feature_at_top=False), examined="all")
    assert weights["profile_prefix1"] == pytest.approx(1.0, abs=0.15)
    assert weights["profile_sim"] == weights["profile_prefix2"] == 0.0
    assert fit["position_click_odds"][0] == 1.0 and fit["position_click_odds"][-1] < 0.1
    assert fit["loglik"] > fit["loglik_positions_only"] and fit["base"] == "logrank"


def test_position_bias_does_not_pass_for_preference():
    """The feature sits mostly at the top and clicks depend on the position only: items with
    it are clicked far more often, and yet the fit gives it (close to) no weight."""
    sessions = _sessions(3000, beta=0.0, feature_at_top=True)
    shown = [(s.scores[h.item_id]["profile_prefix1"], h.item_id in s.gains) for s in sessions for h in s.fused]
    ctr = [sum(c for f, c in shown if f == v) / sum(1 for f, _ in shown if f == v) for v in (1.0, 0.0)]
    assert ctr[0] > 2 * ctr[1]  # a naive click-rate comparison would call this a strong preference
    for examined in ("all", "cascade"):
        weights, _ = fit_weights(sessions, examined=examined)
        assert weights["profile_prefix1"] < 0.15, examined


def _cascade_sessions(n: int, beta: float, seed: int = 7) -> list[Session]:
    """Clicks from the cascade model bench.feedback's simulator uses: the user reads down the
    list, clicks with ``sigmoid(-1.5 + beta · prefix1)``, stops after a click with probability
    0.6 and after a skip with probability 0.2; the feature is independent of the position."""
    rng = random.Random(seed)
    out = []
    for s in range(n):
        fused, scores = _top10(s, rng, feature_at_top=False)
        gains: dict[str, float] = {}
        for hit in fused:
            if rng.random() < 1 / (1 + math.exp(1.5 - beta * scores[hit.item_id]["profile_prefix1"])):
                gains[hit.item_id] = 1.0
                if rng.random() < 0.6:
                    break
            elif rng.random() >= 0.8:
                break
        out.append(Session(fused, scores, gains))
    return out


def test_under_cascade_clicks_only_the_examined_impressions_recover_the_effect():
    """What lies below a user's last click was never seen: counting it as a skip (a
    position-based model) biases the weight towards 0; the cascade fit does not."""
    sessions = _cascade_sessions(3000, beta=1.0)
    all_shown, _ = fit_weights(sessions, examined="all")
    cascade, fit = fit_weights(sessions, examined="cascade")
    assert cascade["profile_prefix1"] == pytest.approx(1.0, abs=0.1) and fit["examined"] == "cascade"
    assert all_shown["profile_prefix1"] < 0.9
    assert fit_weights(_cascade_sessions(3000, beta=0.0), examined="cascade")[0]["profile_prefix1"] < 0.1


def test_fit_names_what_is_missing():
    fused = [FusedHit("a", 1.0, ())]
    with pytest.raises(InvalidInput, match="no session"):
        fit_weights([Session(fused, {}, {})])
    with pytest.raises(InvalidInput, match="`shown`"):
        fit_weights([Session(fused, {}, {"a": 1.0})], shown=0)
    with pytest.raises(InvalidInput, match="examined"):
        fit_weights([Session(fused, {}, {"a": 1.0})], examined="dbn")
