"""Personalised re-ranking over any fuser, and fitting its weights on logged clicks.

:class:`PersonalFuser` wraps the served fuser. When the item scores carry no
:data:`~tandem.personal.features.PROFILE_SCORES` (anonymous user, no profile, store down) it
returns the inner fuser's ranking untouched, so requests without a known user behave exactly
as before. Otherwise it re-scores each of the inner fuser's top ``depth`` hits as

    base(hit) + Σ_f w_f · f(item),   f ∈ profile_sim, profile_prefix1, profile_prefix2

(sorted by that, ties by the inner order; hits below ``depth`` keep their order after them).
``base`` is per-query normalised so one set of weights fits every query and every fuser:
``logrank`` (−ln(rank), rank 1 = 0: the inner order with a prior that relevance decays with
rank, independent of the fuser's score scale; the default) or ``minmax`` (min-max of the
inner scores over the depth). :func:`tandem.personal.fit.fit_weights` learns ``w`` from logged
clicks (:class:`Session`), corrected for position bias.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tandem.errors import InvalidInput
from tandem.fusion.base import FusedHit, Fuser, ItemScores, RankedList
from tandem.fusion.normalized import normalize_scores
from tandem.personal.features import PROFILE_SCORES

DEFAULT_WEIGHTS = {"profile_sim": 0.0, "profile_prefix1": 2.0, "profile_prefix2": 0.0}
BASES = ("logrank", "minmax")


class PersonalFuser(Fuser):
    """Profile-aware re-ranking of ``inner``'s fused list (module docstring)."""

    name = "personal"

    def __init__(self, inner: Fuser, weights: Mapping[str, float] | None = None, depth: int = 100,
                 base: str = "logrank") -> None:
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        unknown = set(weights) - set(PROFILE_SCORES)
        if unknown:
            raise InvalidInput(f"`weights` names unknown profile features {sorted(unknown)}; known: {PROFILE_SCORES}")
        if any(not math.isfinite(w) for w in weights.values()):
            raise InvalidInput("`weights` must be finite numbers")
        if depth < 1:
            raise InvalidInput(f"`depth` must be >= 1, got {depth}")
        if base not in BASES:
            raise InvalidInput(f"`base` must be one of {BASES}, got {base!r}")
        self.inner, self.weights, self.depth, self.base = inner, weights, depth, base
        self.score_names = inner.score_names

    def fuse(self, lists: Sequence[RankedList], k: int, item_scores: ItemScores | None = None) -> list[FusedHit]:
        """The inner ranking, re-ranked by profile features when ``item_scores`` has them."""
        scores = item_scores or {}
        if not any(name in vals for vals in scores.values() for name in PROFILE_SCORES):
            return self.inner.fuse(lists, k, item_scores)
        fused = self.inner.fuse(lists, max(k, self.depth), item_scores)
        return rerank(fused, scores, self.weights, self.depth, self.base)[:k]

    def version(self) -> str:
        """The inner version plus a digest of the weights (cache keys change with them)."""
        digest = hashlib.sha1(json.dumps([self.weights, self.depth, self.base], sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.inner.version()}+personal:{digest}"


def rerank(fused: Sequence[FusedHit], scores: ItemScores, weights: Mapping[str, float], depth: int | None = None,
           base: str = "logrank") -> list[FusedHit]:
    """``fused``'s top ``depth`` re-scored with profile features (module docstring)."""
    top, rest = list(fused[:depth]), list(fused[len(fused) if depth is None else depth:])
    if base == "minmax":
        prior = [float(b) for b in normalize_scores([h.score for h in top], "minmax")]
    else:
        prior = [-math.log(n + 1) for n in range(len(top))]
    rescored = []
    for n, (h, b) in enumerate(zip(top, prior, strict=True)):
        vals = scores.get(h.item_id) or {}
        s = b + sum(w * float(vals.get(f, 0.0)) for f, w in weights.items())
        rescored.append((-s, n, FusedHit(h.item_id, s, h.provenance)))
    return [h for _, _, h in sorted(rescored, key=lambda t: (t[0], t[1]))] + rest


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
