"""Capacity-bounded (balanced) k-means in NumPy.

The hierarchical builder runs thousands of small k-means problems (one per node), where
scikit-learn's per-call overhead would dominate; this is Lloyd's algorithm with k-means++
seeding followed by a capacity repair, all vectorised over points.

Why bounded: an unbalanced codebook wastes ID space and makes a few prefixes carry most
items, which both the model (one code must discriminate many items) and the suffix
capacity pay for. A cap of ``ceil(ratio * n / k)`` keeps clusters within ``ratio`` of even
while still letting a cluster be somewhat larger than average when the data says so.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt


def _sq_dist(x: npt.NDArray[np.float32], c: npt.NDArray[np.float32],
             xx: npt.NDArray[np.float32] | None = None) -> npt.NDArray[np.float32]:
    """Squared distances ``[n, k]``; pass ``xx = (x * x).sum(1)`` when calling repeatedly."""
    if xx is None:
        xx = (x * x).sum(1)
    d = xx[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _kmeans_pp(x: npt.NDArray[np.float32], k: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Greedy k-means++ seeding (as scikit-learn): of ``2 + log k`` sampled candidates per
    step keep the one that lowers the potential most — far fewer bad local optima."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    centers = np.empty((k, x.shape[1]), dtype=np.float32)
    xx = (x * x).sum(1)
    centers[0] = x[rng.integers(n)]
    closest = _sq_dist(x, centers[:1], xx)[:, 0]
    for i in range(1, k):
        total = float(closest.sum())
        if total <= 0:
            centers[i] = x[rng.integers(n)]
            continue
        cand = rng.choice(n, size=trials, p=closest / total)
        d = np.minimum(closest[:, None], _sq_dist(x, x[cand], xx))  # [n, trials]
        best = int(d.sum(0).argmin())
        centers[i] = x[cand[best]]
        closest = d[:, best]
    return centers


def balanced_kmeans(
    x: npt.NDArray[np.float32], k: int, *, max_ratio: float = 1.25, iters: int = 25, seed: int = 0,
    restarts: int = 3,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Cluster rows of ``x`` into ``k`` clusters of at most ``ceil(max_ratio * n / k)`` points.

    Returns ``(labels [n], centroids [k, dim])``; every cluster is non-empty when ``k <= n``.
    The best of ``restarts`` seedings (lowest inertia) is kept. Deterministic for a ``seed``.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in [1, n={n}]")
    if k == 1:
        return np.zeros(n, np.int64), x.mean(0, keepdims=True).astype(np.float32)
    if k == n:
        return np.arange(n, dtype=np.int64), x.astype(np.float32, copy=True)
    rng = np.random.default_rng(seed)
    best: tuple[float, npt.NDArray[np.int64], npt.NDArray[np.float32]] | None = None
    # Restarts pay off where clusters are big (upper levels); a node split into clusters
    # of a few items is cheap to get nearly right and there are thousands of them.
    for _ in range(restarts if n >= 8 * k else 1):
        labels, centers = _lloyd(x, _kmeans_pp(x, k, rng), iters)
        inertia = float(_sq_dist(x, centers)[np.arange(n), labels].sum())
        if best is None or inertia < best[0]:
            best = (inertia, labels, centers)
    if best is None:
        raise ValueError("restarts must be >= 1")
    _, labels, centers = best
    cap = max(1, math.ceil(max_ratio * n / k))
    labels = _repair(_sq_dist(x, centers), labels, cap)
    labels = _fill_empty(_sq_dist(x, centers), labels, k)
    return labels, _centroids(x, labels, k, centers)


def _lloyd(x: npt.NDArray[np.float32], centers: npt.NDArray[np.float32],
           iters: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    labels = np.full(x.shape[0], -1, np.int64)
    xx = (x * x).sum(1)
    for _ in range(iters):
        new = _sq_dist(x, centers, xx).argmin(1)
        if np.array_equal(new, labels):
            break
        labels = new
        centers = _centroids(x, labels, centers.shape[0], centers)
    return labels, centers


def _centroids(x: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], k: int,
               old: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    # Sorted segment sums: np.add.at is an order of magnitude slower for this.
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=k)
    out = old.astype(np.float64, copy=True)
    nz = np.flatnonzero(counts)
    starts = (np.cumsum(counts) - counts)[nz]
    sums = np.add.reduceat(x[order].astype(np.float64), starts, axis=0)
    out[nz] = sums / counts[nz, None]
    return out.astype(np.float32)


def _repair(dist: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], cap: int) -> npt.NDArray[np.int64]:
    """Evict points from over-full clusters to their nearest cluster with room.

    An over-full cluster keeps the ``cap`` points that would lose most by moving (largest
    regret = distance to the best other open cluster minus distance here) and closes; the
    evicted points move on. Each round closes at least one cluster, so it ends in <= k rounds.
    """
    labels = labels.copy()
    k = dist.shape[1]
    open_ = np.ones(k, dtype=bool)
    for _ in range(k):
        counts = np.bincount(labels, minlength=k)
        over = np.flatnonzero(counts > cap)
        if over.size == 0:
            break
        for c in over:
            members = np.flatnonzero(labels == c)
            others = dist[members][:, open_ & (np.arange(k) != c)]
            best_other = others.min(1) if others.shape[1] else np.full(len(members), np.inf)
            regret = best_other - dist[members, c]
            keep = members[np.argsort(-regret, kind="stable")[:cap]]
            evict = np.setdiff1d(members, keep, assume_unique=True)
            open_[c] = False
            if evict.size:
                masked = np.where(open_[None, :], dist[evict], np.inf)
                labels[evict] = masked.argmin(1)
    return labels


def _fill_empty(dist: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], k: int) -> npt.NDArray[np.int64]:
    """Give every empty cluster one point (from the largest cluster), so codes stay dense."""
    labels = labels.copy()
    for c in range(k):
        counts = np.bincount(labels, minlength=k)
        if counts[c] > 0:
            continue
        donor = int(counts.argmax())
        members = np.flatnonzero(labels == donor)
        labels[members[int(dist[members, c].argmin())]] = c
    return labels
