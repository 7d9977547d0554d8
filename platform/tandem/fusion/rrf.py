"""Reciprocal rank fusion (Cormack, Clarke and Büttcher, SIGIR 2009).

``score(d) = Σ_lists w_source · w_intent / (k + rank_list(d))``. RRF ignores the sources'
raw scores, which live on incomparable scales (BM25 vs. sequence log-probabilities), and
needs no training data — the right default until a learned fuser earns its place.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from tandem.errors import InvalidInput
from tandem.fusion.base import Evidence, FusedHit, Fuser, ItemScores, RankedList


class RRF(Fuser):
    """Weighted reciprocal rank fusion.

    ``k`` dampens the advantage of top ranks (60 in the original paper); ``weights`` scales a
    source's contribution (missing sources weigh 1.0; weight 0 keeps a source for provenance
    only).
    """

    name = "rrf"

    def __init__(self, k: float = 60.0, weights: Mapping[str, float] | None = None) -> None:
        if not k > 0:
            raise InvalidInput(f"`k` must be > 0, got {k}")
        weights = dict(weights or {})
        for source, w in weights.items():
            if not w >= 0:
                raise InvalidInput(f"`weights[{source!r}]` must be >= 0, got {w}")
        self.k = float(k)
        self.weights = weights

    def fuse(self, lists: Sequence[RankedList], k: int, item_scores: ItemScores | None = None) -> list[FusedHit]:
        """Fuse ``lists`` into at most ``k`` hits (see :meth:`Fuser.fuse`)."""
        if k < 1:
            raise InvalidInput(f"`k` must be >= 1, got {k}")
        scores: dict[str, float] = {}
        # item -> source -> (best rank, score at that rank)
        evidence: dict[str, dict[str, tuple[int, float]]] = {}
        best_rank: dict[str, int] = {}  # item -> its best rank in any list (the first tie-break)
        for ranked in lists:
            w = self.weights.get(ranked.source, 1.0) * ranked.intent_weight
            source = ranked.source
            seen: set[str] = set()
            for rank, hit in enumerate(ranked.hits, start=1):
                item = hit.item_id
                if item in seen:  # a misbehaving source must not count an item twice
                    continue
                seen.add(item)
                scores[item] = scores.get(item, 0.0) + w / (self.k + rank)
                per_source = evidence.get(item)
                if per_source is None:
                    evidence[item] = {source: (rank, hit.score)}
                    best_rank[item] = rank
                    continue
                best = per_source.get(source)
                if best is None or rank < best[0]:
                    per_source[source] = (rank, hit.score)
                if rank < best_rank[item]:
                    best_rank[item] = rank

        ranked_ids = heapq.nsmallest(k, scores, key=lambda i: (-scores[i], best_rank[i], i))
        return [
            FusedHit(
                item_id=i,
                score=scores[i],
                provenance=tuple(
                    Evidence(source=s, rank=r, score=sc)
                    for s, (r, sc) in sorted(evidence[i].items(), key=lambda kv: (kv[1][0], kv[0]))
                ),
            )
            for i in ranked_ids
        ]

    def version(self) -> str:
        """``rrf:k=60:bm25=1.0,...`` — the parameters that change results."""
        ws = ",".join(f"{s}={w:g}" for s, w in sorted(self.weights.items()))
        return f"rrf:k={self.k:g}:{ws}"
