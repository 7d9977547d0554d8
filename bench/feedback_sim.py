"""The seeded behaviour simulator behind ``bench.feedback`` (issue 22).

**Users.** Each synthetic user has an affinity for ``CLUSTERS_PER_USER`` (2) top-level
semantic-ID clusters of the catalog — the clusters the ID builder found in the encoder's
space, which group brands and product families — drawn with probability proportional to the
clusters' sizes among the judged items of the query pool. An item *matches* a user when its
top-level cluster is one of theirs.

**Sessions.** A user's queries are Home Depot training queries; with probability
``P_AFFINE_QUERY`` (0.8) one with at least one relevant (grade ≥ 4) item in the user's
clusters, else any. Queries are drawn without replacement per user, so history and held-out
sessions never share a query.

**Clicks** (cascade over the top 10, as bench.canary's, made affinity-aware): at a hit of grade
``g`` (0..6, unjudged 0) the user clicks with probability ``max(0.02, 0.9 g / 6)``, times
``NON_AFFINE_CLICK`` (0.35) when the item does not match the user; after a click they stop
with probability 0.6, after a hit without a click they go on with probability 0.8. A click
on a matching item becomes a purchase with probability 0.4 (0.1 otherwise).

**Affinity-weighted relevance** (what personalisation is judged on): gain = grade ·
(1 + ``AFFINITY_BOOST``) for a matching item, the grade otherwise (``AFFINITY_BOOST`` = 1).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CLUSTERS_PER_USER = 2
P_AFFINE_QUERY = 0.8
NON_AFFINE_CLICK = 0.35
AFFINITY_BOOST = 1.0


@dataclass(frozen=True)
class SimUser:
    """A synthetic user and their preferred top-level ID clusters."""

    user_id: str
    clusters: frozenset[int]


def cluster_of(codes: Mapping[str, tuple[int, ...]], item: str) -> int:
    """Top-level cluster of ``item`` (-1 when it has no ID)."""
    c = codes.get(item)
    return c[0] if c else -1


def make_users(n: int, prefix: str, qrels: Mapping[str, Mapping[str, int]], codes: Mapping[str, tuple[int, ...]],
               rng: random.Random) -> list[SimUser]:
    """``n`` users with clusters drawn by size among the judged items of ``qrels``."""
    sizes = Counter(cluster_of(codes, i) for docs in qrels.values() for i in docs if i in codes)
    clusters, weights = zip(*sorted(sizes.items()), strict=True)
    users = []
    for u in range(n):
        picked: set[int] = set()
        while len(picked) < CLUSTERS_PER_USER:
            picked.add(rng.choices(clusters, weights)[0])
        users.append(SimUser(f"{prefix}{u}", frozenset(picked)))
    return users


def draw_queries(user: SimUser, n: int, qrels: Mapping[str, Mapping[str, int]], codes: Mapping[str, tuple[int, ...]],
                 rng: random.Random) -> list[str]:
    """``n`` distinct query ids for ``user`` (module docstring)."""
    qids = sorted(qrels)
    affine = [q for q in qids if any(g >= 4 and cluster_of(codes, i) in user.clusters for i, g in qrels[q].items())]
    out: list[str] = []
    while len(out) < n:
        pool = affine if affine and rng.random() < P_AFFINE_QUERY else qids
        q = rng.choice(pool)
        if q not in out:
            out.append(q)
    return out


def gains(user: SimUser, grades: Mapping[str, int], codes: Mapping[str, tuple[int, ...]]) -> dict[str, float]:
    """Affinity-weighted relevance of the judged items."""
    return {i: g * (1 + AFFINITY_BOOST * (cluster_of(codes, i) in user.clusters)) for i, g in grades.items() if g > 0}


def oracle_scores(user: SimUser, ids: Sequence[str], codes: Mapping[str, tuple[int, ...]]) -> dict[str, dict[str, float]]:
    """Profile scores of a profile that knows ``user``'s clusters: ``profile_prefix1`` = 1 on a
    matching item, else 0 (the ceiling of cluster re-ranking, a diagnostic, not a ranker)."""
    return {i: {"profile_prefix1": float(cluster_of(codes, i) in user.clusters)} for i in ids}


def cascade(user: SimUser, ranked: Sequence[str], grades: Mapping[str, int], codes: Mapping[str, tuple[int, ...]],
            rng: random.Random) -> list[tuple[int, str]]:
    """``(0-based position, "click" | "purchase")`` of what the user did on ``ranked``'s top 10."""
    out: list[tuple[int, str]] = []
    for pos, item in enumerate(ranked[:10]):
        match = not user.clusters or cluster_of(codes, item) in user.clusters  # no clusters: a neutral user
        p = max(0.02, 0.9 * grades.get(item, 0) / 6) * (1.0 if match else NON_AFFINE_CLICK)
        if rng.random() < p:
            out.append((pos, "click"))
            if rng.random() < (0.4 if match else 0.1):
                out.append((pos, "purchase"))
            if rng.random() < 0.6:
                break
        elif rng.random() >= 0.8:
            break
    return out
