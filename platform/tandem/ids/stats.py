"""Codebook health of an ID map, per position and overall.

Per position ``p`` (the first ``levels`` are prefix levels, the last is the suffix):

* ``nodes``: distinct prefixes of length ``p + 1`` in use;
* ``utilisation``: ``nodes / (parents * code_space[p])``: share of the available codes used;
* ``entropy_bits``: Shannon entropy of the items' distribution over those prefixes, and
  ``entropy_ratio`` = entropy / log2(nodes) (1.0 = perfectly even);
* ``largest_cluster``: most items under one prefix of length ``p + 1``;
* ``mean_cluster``: items per prefix.

Overall: ``collisions_before_suffix`` counts items that share their full prefix with at
least one other item (the suffix is what tells them apart); ``depth`` is the ID length.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tandem.ids.idmap import IdMap


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def id_stats(idmap: IdMap) -> dict[str, object]:
    """Stats dictionary (JSON-serialisable) for ``idmap``; see the module docstring."""
    codes = idmap.as_array()
    space = idmap.code_space()
    n = len(codes)
    per_level: list[dict[str, object]] = []
    parents = 1
    for p in range(idmap.length):
        _, counts = np.unique(codes[:, : p + 1], axis=0, return_counts=True) if n else (None, np.zeros(0))
        nodes = len(counts)
        h = _entropy(counts) if nodes else 0.0
        per_level.append({
            "position": p,
            "kind": ("category" if p < idmap.category_levels else "semantic") if p < idmap.config.levels else "suffix",
            "code_space": int(space[p]),
            "nodes": nodes,
            "utilisation": round(nodes / max(parents * space[p], 1), 4),
            "entropy_bits": round(h, 4),
            "entropy_ratio": round(float(h / np.log2(nodes)), 4) if nodes > 1 else 1.0,
            "largest_cluster": int(counts.max()) if nodes else 0,
            "mean_cluster": round(n / nodes, 3) if nodes else 0.0,
        })
        parents = nodes
    _, leaf_counts = np.unique(codes[:, :-1], axis=0, return_counts=True) if n else (None, np.zeros(0, int))
    return {
        "items": n,
        "depth": idmap.length,
        "version": idmap.version,
        "category_levels": idmap.category_levels,
        "leaves": int(len(leaf_counts)),
        "collisions_before_suffix": int(leaf_counts[leaf_counts > 1].sum()),
        "largest_leaf": int(leaf_counts.max()) if n else 0,
        "free_suffix_slots": idmap.free_slots(),
        "levels": per_level,
    }
