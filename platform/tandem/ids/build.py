"""Build semantic IDs for a catalog: embed → (category levels) → hierarchical balanced
k-means → per-leaf suffix.

Level by level, every node's items are split: by category name on the top
``category_levels`` levels when the catalog has category paths, by capacity-bounded
k-means (:mod:`tandem.ids.kmeans`) below. Items with the same embedding (identical or
near-identical text) are kept in one cluster on the last level, so they share the whole
prefix and differ only in the suffix. Suffixes are handed out per leaf in catalog order;
``reserved_per_leaf`` codes of every leaf stay free for :meth:`IdMap.assign`.
"""

from __future__ import annotations

import time
import uuid
import zlib
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from tandem.catalog.item import Item
from tandem.errors import InvalidInput
from tandem.ids.config import SemanticIdConfig
from tandem.ids.embed import Embedder, make_embedder
from tandem.ids.idmap import CodeTree, IdMap, capacity_check, coerce_items, item_text
from tandem.ids.kmeans import balanced_kmeans

Node = tuple[tuple[int, ...], npt.NDArray[np.int64]]  # (prefix codes, member item indices)


def _node_seed(seed: int, prefix: tuple[int, ...]) -> int:
    return zlib.crc32(repr((seed, prefix)).encode())


def _group_duplicates(x: npt.NDArray[np.float32], labels: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Give every group of (near-)identical vectors the label of its first member."""
    keys = np.ascontiguousarray(np.round(x, 4))
    rows = keys.view(np.dtype((np.void, keys.dtype.itemsize * keys.shape[1]))).reshape(-1)
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    return labels[first[inverse.reshape(-1)]]


def _split_by_category(members: npt.NDArray[np.int64], names: list[str]) -> list[tuple[str, npt.NDArray[np.int64]]]:
    groups: dict[str, list[int]] = {}
    for m in members.tolist():
        groups.setdefault(names[m], []).append(m)
    return [(name, np.array(groups[name], np.int64)) for name in sorted(groups)]


def build_semantic_ids(
    items: Iterable[Item | dict[str, object]],
    config: SemanticIdConfig | None = None,
    embedder: Embedder | None = None,
) -> IdMap:
    """Assign every item a unique semantic ID of ``config.levels + 1`` codes.

    ``embedder``: a custom :class:`~tandem.ids.embed.Embedder` (fitted here on the
    catalog); by default the one ``config.embedder`` describes. Raises
    :class:`~tandem.errors.InvalidInput` for an empty catalog, duplicate item ids, a
    branching factor larger than the catalog, or a shape that cannot hold it.
    """
    cfg = config or SemanticIdConfig()
    catalog = coerce_items(items)
    n = len(catalog)
    if cfg.branching > n:
        raise InvalidInput(f"`branching` ({cfg.branching}) is larger than the catalog ({n} items)")
    cat_levels = min(cfg.category_levels, cfg.levels - 1) if cfg.use_categories and any(it.category for it in catalog) else 0
    paths = [[(it.category[lv] if lv < len(it.category) else "") for lv in range(cat_levels)] for it in catalog]
    n_top = len({tuple(p) for p in paths}) if cat_levels else 1
    capacity_check(n, cfg.model_copy(update={"category_levels": cat_levels}), n_top)

    emb = embedder or make_embedder(cfg.embedder, cfg.seed)
    texts = [item_text(it) for it in catalog]
    x = emb.fit_transform(texts)

    prefixes: list[list[tuple[int, ...]]] = []
    centroids: list[list[npt.NDArray[np.float32]]] = []
    names: list[list[str] | None] = []
    nodes: list[Node] = [((), np.arange(n, dtype=np.int64))]
    for level in range(cfg.levels):
        lv_prefixes: list[tuple[int, ...]] = []
        lv_centroids: list[npt.NDArray[np.float32]] = []
        lv_names: list[str] = []
        children: list[Node] = []
        last = level == cfg.levels - 1
        for prefix, members in nodes:
            if level < cat_levels:
                level_names = [p[level] for p in paths]
                for code, (name, sub) in enumerate(_split_by_category(members, level_names)):
                    children.append(((*prefix, code), sub))
                    lv_names.append(name)
                    lv_centroids.append(x[sub].mean(0))
                continue
            k = min(cfg.branching, len(members))
            labels, cents = balanced_kmeans(x[members], k, max_ratio=cfg.max_cluster_ratio,
                                            iters=cfg.kmeans_iters, restarts=cfg.kmeans_restarts,
                                            seed=_node_seed(cfg.seed, prefix))
            if last:
                labels = _group_duplicates(x[members], labels)
            for code in range(k):
                sub = members[labels == code]
                if sub.size:
                    children.append(((*prefix, code), sub))
                    lv_centroids.append(x[sub].mean(0) if last else cents[code])
        for prefix, _ in children:
            lv_prefixes.append(prefix)
        prefixes.append(lv_prefixes)
        centroids.append(lv_centroids)
        names.append(lv_names if level < cat_levels else None)
        nodes = children

    dim = x.shape[1]
    tree = CodeTree(
        prefixes=[np.array(p, np.int64).reshape(len(p), lv + 1) for lv, p in enumerate(prefixes)],
        centroids=[np.array(c, np.float32).reshape(len(c), dim) for c in centroids],
        names=names,
    )
    empty = np.zeros((0, cfg.length), np.int64)
    idmap = IdMap(cfg, [], empty, tree, emb, version=1, category_levels=cat_levels,
                  base_id=f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}")
    _hand_out_suffixes(idmap, catalog, nodes, x)
    return idmap


def _hand_out_suffixes(idmap: IdMap, catalog: list[Item], leaves: list[Node], x: npt.NDArray[np.float32]) -> None:
    """Suffix codes per leaf in catalog order, at most ``capacity - reserved`` per leaf;
    a leaf's overflow spills to its nearest sibling (then cousin) leaf with room."""
    cfg = idmap.config
    usable = cfg.leaf_capacity - cfg.reserved_per_leaf
    codes = np.zeros((len(catalog), cfg.length), np.int64)
    order = sorted(range(len(leaves)), key=lambda i: int(leaves[i][1].min()))
    leaf_row = {p: i for i, p in enumerate(map(tuple, idmap.tree.prefixes[-1].tolist()))}
    used = idmap._leaf_used  # noqa: SLF001 - the builder fills the map it just created
    for i in order:
        prefix, members = leaves[i]
        row = leaf_row[prefix]
        for m in np.sort(members).tolist():
            target = idmap.nearest_leaf_with_room(row, x[m], limit=usable)
            codes[m, :-1] = idmap.tree.prefixes[-1][target]
            codes[m, -1] = used[target]
            used[target] += 1
    idmap._append([it.item_id for it in catalog], [tuple(r) for r in codes.tolist()])  # noqa: SLF001
