"""Personalised re-ranking over any fuser, and fitting its weights on logged clicks.

:class:`PersonalFuser` wraps the served fuser. When the item scores carry no
:data:`~tandem.personal.features.PROFILE_SCORES` (anonymous user, no profile, store down) it
returns the inner fuser's ranking untouched, so requests without a known user behave exactly
as before. Otherwise it takes the inner fuser's top ``depth`` and re-scores each hit as

    min-max(inner score) + Σ_f w_f · f(item),   f ∈ profile_sim, profile_prefix1, profile_prefix2

(sorted by that, ties by the inner order). :func:`fit_weights` picks ``w`` on a grid by the
nDCG@10 of logged clicks/purchases (purchases graded higher) over sessions with profiles —
behaviour data, not relevance judgements.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tandem.errors import InvalidInput
from tandem.fusion.base import FusedHit, Fuser, ItemScores, RankedList
from tandem.fusion.normalized import normalize_scores
from tandem.personal.features import PROFILE_SCORES

DEFAULT_WEIGHTS = {"profile_sim": 0.5, "profile_prefix1": 0.2, "profile_prefix2": 0.3}


class PersonalFuser(Fuser):
    """Profile-aware re-ranking of ``inner``'s fused list (module docstring)."""

    name = "personal"

    def __init__(self, inner: Fuser, weights: Mapping[str, float] | None = None, depth: int = 100) -> None:
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        unknown = set(weights) - set(PROFILE_SCORES)
        if unknown:
            raise InvalidInput(f"`weights` names unknown profile features {sorted(unknown)}; known: {PROFILE_SCORES}")
        if any(not math.isfinite(w) for w in weights.values()):
            raise InvalidInput("`weights` must be finite numbers")
        if depth < 1:
            raise InvalidInput(f"`depth` must be >= 1, got {depth}")
        self.inner, self.weights, self.depth = inner, weights, depth
        self.score_names = inner.score_names

    def fuse(self, lists: Sequence[RankedList], k: int, item_scores: ItemScores | None = None) -> list[FusedHit]:
        """The inner ranking, re-ranked by profile features when ``item_scores`` has them."""
        scores = item_scores or {}
        if not any(name in vals for vals in scores.values() for name in PROFILE_SCORES):
            return self.inner.fuse(lists, k, item_scores)
        fused = self.inner.fuse(lists, max(k, self.depth), item_scores)
        return rerank(fused, scores, self.weights)[:k]

    def version(self) -> str:
        """The inner version plus a digest of the weights (cache keys change with them)."""
        digest = hashlib.sha1(json.dumps(self.weights, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.inner.version()}+personal:{digest}"


def rerank(fused: Sequence[FusedHit], scores: ItemScores, weights: Mapping[str, float]) -> list[FusedHit]:
    """``fused`` re-scored with profile features (module docstring)."""
    base = normalize_scores([h.score for h in fused], "minmax")
    rescored = []
    for n, (h, b) in enumerate(zip(fused, base, strict=True)):
        vals = scores.get(h.item_id) or {}
        s = float(b) + sum(w * float(vals.get(f, 0.0)) for f, w in weights.items())
        rescored.append((-s, n, FusedHit(h.item_id, s, h.provenance)))
    return [h for _, _, h in sorted(rescored, key=lambda t: (t[0], t[1]))]


@dataclass(frozen=True)
class Session:
    """One logged search of a user with a profile: the non-personalised fused list, the
    candidates' profile scores at the time, and the user's graded engagement per item."""

    fused: Sequence[FusedHit]
    scores: ItemScores
    gains: Mapping[str, float]


def ndcg10(ranked: Sequence[str], gains: Mapping[str, float]) -> float:
    """nDCG@10 of ``ranked`` under ``gains`` (0 when nothing has a gain)."""
    dcg = sum(gains.get(i, 0.0) / math.log2(r + 2) for r, i in enumerate(ranked[:10]))
    ideal = sum(g / math.log2(r + 2) for r, g in enumerate(sorted(gains.values(), reverse=True)[:10]))
    return dcg / ideal if ideal > 0 else 0.0


def fit_weights(sessions: Sequence[Session], grid: Sequence[float] = (0.0, 0.25, 0.5, 1.0, 2.0)
                ) -> tuple[dict[str, float], dict[str, float]]:
    """Grid search of one weight per profile feature for the best mean nDCG@10 of the sessions'
    engagement; returns the weights and ``{"ndcg@10": best, "ndcg@10_unpersonalised": baseline}``."""
    usable = [s for s in sessions if any(g > 0 for g in s.gains.values())]
    if not usable:
        raise InvalidInput("no session with a click or purchase to fit profile weights on")

    def mean(weights: Mapping[str, float]) -> float:
        return sum(ndcg10([h.item_id for h in rerank(s.fused, s.scores, weights)], s.gains)
                   for s in usable) / len(usable)

    baseline = sum(ndcg10([h.item_id for h in s.fused], s.gains) for s in usable) / len(usable)
    best = (baseline, dict.fromkeys(PROFILE_SCORES, 0.0))
    for combo in itertools.product(grid, repeat=len(PROFILE_SCORES)):
        w = dict(zip(PROFILE_SCORES, combo, strict=True))
        if not any(combo):
            continue
        m = mean(w)
        if m > best[0] + 1e-9:
            best = (m, w)
    return best[1], {"ndcg@10": round(best[0], 4), "ndcg@10_unpersonalised": round(baseline, 4),
                     "sessions": len(usable)}
