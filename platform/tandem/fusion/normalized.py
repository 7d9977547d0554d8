"""Normalised score fusion (CombSUM over per-list normalised scores; Fox and Shaw, 1994).

Each list's raw scores are mapped to a common scale, then
``score(d) = Σ_lists w_source · w_intent · norm_list(d)``; an item a list did not return gets
that list's lowest normalised value (0 for min-max), i.e. no credit.

* ``minmax``: ``(s - min) / (max - min)``; a list whose scores are all equal (including a
  one-hit list) gives every hit 1.0 — each is as good as the list's best.
* ``zscore``: ``(s - mean) / std``, shifted so the list's minimum is 0 (absent = 0 too); with
  ``std == 0`` every hit gets 0 — the list cannot tell its hits apart, so it adds nothing.

Unlike RRF this keeps *how much* better a top hit is, which helps when one source is
confident, and hurts when a source's score distribution is odd; the benchmark decides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from tandem.errors import InvalidInput
from tandem.fusion.base import Evidence, FusedHit, Fuser, ItemScores, RankedList

METHODS = ("minmax", "zscore")


def normalize_scores(scores: Sequence[float], method: str) -> list[float]:
    """Normalise one list's scores (see the module docstring); never divides by zero."""
    if method not in METHODS:
        raise InvalidInput(f"`method` must be one of {', '.join(METHODS)}, got {method!r}")
    if not scores:
        return []
    if method == "minmax":
        lo, hi = min(scores), max(scores)
        span = hi - lo
        return [1.0] * len(scores) if span <= 0 or not math.isfinite(span) else [(s - lo) / span for s in scores]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    if std <= 0 or not math.isfinite(std):
        return [0.0] * len(scores)
    z = [(s - mean) / std for s in scores]
    lo = min(z)
    return [v - lo for v in z]


class ScoreFusion(Fuser):
    """Weighted CombSUM of normalised scores (``method`` = ``minmax`` or ``zscore``)."""

    def __init__(self, method: str = "minmax", weights: Mapping[str, float] | None = None) -> None:
        if method not in METHODS:
            raise InvalidInput(f"`method` must be one of {', '.join(METHODS)}, got {method!r}")
        weights = dict(weights or {})
        for source, w in weights.items():
            if not w >= 0:
                raise InvalidInput(f"`weights[{source!r}]` must be >= 0, got {w}")
        self.method = method
        self.weights = weights
        self.name = method

    def fuse(self, lists: Sequence[RankedList], k: int, item_scores: ItemScores | None = None) -> list[FusedHit]:
        """Fuse ``lists`` into at most ``k`` hits (see :meth:`Fuser.fuse`)."""
        if k < 1:
            raise InvalidInput(f"`k` must be >= 1, got {k}")
        scores: dict[str, float] = {}
        evidence: dict[str, dict[str, tuple[int, float]]] = {}
        for ranked in lists:
            w = self.weights.get(ranked.source, 1.0) * ranked.intent_weight
            hits, seen = [], set()
            for h in ranked.hits:  # a misbehaving source must not count an item twice
                if h.item_id not in seen:
                    seen.add(h.item_id)
                    hits.append(h)
            for rank, (hit, norm) in enumerate(zip(hits, normalize_scores([h.score for h in hits], self.method)),
                                               start=1):
                scores[hit.item_id] = scores.get(hit.item_id, 0.0) + w * norm
                per_source = evidence.setdefault(hit.item_id, {})
                best = per_source.get(ranked.source)
                if best is None or rank < best[0]:
                    per_source[ranked.source] = (rank, hit.score)
        return finish(scores, evidence, k)

    def version(self) -> str:
        """``minmax:bm25=1,...`` — the parameters that change results."""
        ws = ",".join(f"{s}={w:g}" for s, w in sorted(self.weights.items()))
        return f"{self.method}:{ws}"


def finish(scores: Mapping[str, float], evidence: Mapping[str, Mapping[str, tuple[int, float]]],
           k: int) -> list[FusedHit]:
    """Top ``k`` by score, ties broken by best rank then item id, with provenance."""
    def order(item_id: str) -> tuple[float, int, str]:
        return (-scores[item_id], min(r for r, _ in evidence[item_id].values()), item_id)

    return [
        FusedHit(item_id=i, score=scores[i], provenance=tuple(
            Evidence(source=s, rank=r, score=sc)
            for s, (r, sc) in sorted(evidence[i].items(), key=lambda kv: (kv[1][0], kv[0]))))
        for i in sorted(scores, key=order)[:k]
    ]
