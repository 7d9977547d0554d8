"""The ID map: item_id ↔ semantic code tuple, the code tree, and new-item assignment.

An ID is ``levels`` prefix codes and one suffix code. The map keeps the tree it was built
from (every prefix node with its centroid in embedding space, and category names for
category levels) and the fitted embedder, so a later :meth:`IdMap.assign` can place a new
item the way the build would have: embed → descend to the nearest prefix → next free
suffix of that leaf, spilling to the nearest sibling leaf with room when it is full.

The map is append-only between base rebuilds: :meth:`assign` never changes an existing
item's ID; each call that adds items bumps :attr:`IdMap.version`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tandem.catalog.item import Item
from tandem.errors import CorruptArtifact, InvalidInput, NotFound
from tandem.ids.config import SemanticIdConfig
from tandem.ids.embed import Embedder

Codes = tuple[int, ...]


@dataclass
class CodeTree:
    """Prefix nodes per level: ``prefixes[l]`` ``[n_l, l + 1]`` codes, their centroids, and
    for category levels the category name of each node (``None`` for semantic levels)."""

    prefixes: list[npt.NDArray[np.int64]]
    centroids: list[npt.NDArray[np.float32]]
    names: list[list[str] | None]


def item_text(item: Item) -> str:
    """The text an item is embedded from (title first; all searchable fields)."""
    return item.text()


def coerce_items(items: Iterable[Item | dict[str, Any]], what: str = "items") -> list[Item]:
    """Validate a batch of items: ``Item`` or dict rows, non-empty, unique ``item_id``."""
    out: list[Item] = []
    for row in items:
        if isinstance(row, Item):
            out.append(row)
        elif isinstance(row, dict):
            try:
                out.append(Item(**row))
            except ValueError as exc:
                raise InvalidInput(f"`{what}` row {len(out)} is not a valid item: {exc}") from exc
        else:
            raise InvalidInput(f"`{what}` must hold Item objects or dicts, got {type(row).__name__}")
    if not out:
        raise InvalidInput(f"`{what}` is empty: at least one item is needed")
    seen: set[str] = set()
    for it in out:
        if it.item_id in seen:
            raise InvalidInput(f"`{what}` has a duplicate item_id {it.item_id!r}")
        seen.add(it.item_id)
    return out


class IdMap:
    """Bidirectional item_id ↔ code-tuple map with the tree and embedder behind it."""

    def __init__(self, config: SemanticIdConfig, item_ids: Sequence[str], codes: npt.NDArray[np.int64],
                 tree: CodeTree, embedder: Embedder | None, *, version: int = 1, base_id: str = "",
                 category_levels: int = 0) -> None:
        """Assemble a map; use :func:`tandem.ids.build_semantic_ids` or :meth:`load` instead."""
        self.config = config
        self.category_levels = category_levels
        self.tree = tree
        self.embedder = embedder
        self.base_id = base_id
        self._version = version
        self._ids: list[str] = list(item_ids)
        self._codes = np.asarray(codes, dtype=np.int64).reshape(len(self._ids), config.length)
        self._index = {iid: i for i, iid in enumerate(self._ids)}
        self._by_code: dict[Codes, str] = {}
        for iid, row in zip(self._ids, self._codes.tolist(), strict=True):
            key = tuple(row)
            if key in self._by_code:
                raise InvalidInput(f"`codes` gives {iid!r} and {self._by_code[key]!r} the same ID {key}")
            self._by_code[key] = iid
        leaf_prefixes = tree.prefixes[-1]
        self._leaf_row = {tuple(p): i for i, p in enumerate(leaf_prefixes.tolist())}
        self._leaf_used = np.zeros(len(leaf_prefixes), np.int64)  # next free suffix per leaf
        if len(self._ids):
            rows = np.array([self._leaf_row[tuple(c[:-1])] for c in self._codes.tolist()], np.int64)
            np.maximum.at(self._leaf_used, rows, self._codes[:, -1] + 1)

    # -- lookups ----------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Map version: 1 after a build, +1 per :meth:`assign` call that added items."""
        return self._version

    @property
    def length(self) -> int:
        """Positions per ID (levels + suffix)."""
        return self.config.length

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def codes(self, item_id: str) -> Codes:
        """The code tuple of ``item_id``; :class:`NotFound` when it has none."""
        i = self._index.get(item_id)
        if i is None:
            raise NotFound(f"item {item_id!r} has no semantic ID")
        return tuple(int(c) for c in self._codes[i])

    def item_for(self, codes: Sequence[int]) -> str | None:
        """The item whose ID is ``codes``, or ``None``."""
        return self._by_code.get(tuple(int(c) for c in codes))

    def item_ids(self) -> list[str]:
        """Item ids in map order (build order, then assignment order)."""
        return list(self._ids)

    def as_array(self) -> npt.NDArray[np.int64]:
        """All IDs as ``[len(self), length]`` codes, rows in :meth:`item_ids` order."""
        return self._codes.copy()

    def code_space(self) -> tuple[int, ...]:
        """Number of distinct code values per position (what a token mapping must cover).

        Stable between base rebuilds: assignment only uses existing prefixes and suffixes
        below ``leaf_capacity``.
        """
        sizes = [int(p[:, -1].max()) + 1 if len(p) else 0 for p in self.tree.prefixes]
        return (*sizes, self.config.leaf_capacity)

    def free_slots(self) -> int:
        """Suffix codes still free across all leaves (room for new items before a rebuild)."""
        return int((self.config.leaf_capacity - self._leaf_used).sum())

    # -- assignment -------------------------------------------------------------------------

    def assign(self, items: Iterable[Item | dict[str, object]], embedder: Embedder | None = None) -> dict[str, Codes]:
        """IDs for ``items``: existing ones unchanged, new ones placed in the reserved space.

        Returns ``{item_id: codes}`` for every given item. ``embedder`` is needed only when
        the map was built with a custom embedder that could not be saved.
        """
        batch = coerce_items(items)
        emb = embedder or self.embedder
        new = [it for it in batch if it.item_id not in self._index]
        if new:
            if emb is None:
                raise InvalidInput("`embedder` is required: this map was saved without its embedder")
            vecs = emb.transform([item_text(it) for it in new])
            added: list[Codes] = []
            for it, vec in zip(new, vecs, strict=True):
                added.append(self._place(it, vec))
            self._append([it.item_id for it in new], added)
            self._version += 1
        return {it.item_id: self.codes(it.item_id) for it in batch}

    def _descend(self, item: Item, vec: npt.NDArray[np.float32]) -> int:
        """Row of the leaf whose centroid is nearest to ``vec``, among the leaves under the
        item's category path when the map has category levels and the path is known.

        Nearest *leaf* rather than greedy nearest child per level: balancing moves some
        items away from their nearest top-level centroid, and a new near-duplicate should
        land next to its twin, wherever balancing put it.
        """
        leaves = self.tree.prefixes[-1]
        allowed = np.ones(len(leaves), dtype=bool)
        prefix = np.zeros(0, np.int64)
        for level in range(min(self.category_levels, len(item.category))):
            names, nodes = self.tree.names[level], self.tree.prefixes[level]
            if names is None:
                break
            match = [r for r, name in enumerate(names)
                     if name == item.category[level] and (nodes[r, :level] == prefix).all()]
            if not match:
                break
            prefix = nodes[match[0]]
            allowed = (leaves[:, : level + 1] == prefix).all(1)
        rows = np.flatnonzero(allowed)
        d = ((self.tree.centroids[-1][rows] - vec) ** 2).sum(1)
        return int(rows[int(d.argmin())])

    def _place(self, item: Item, vec: npt.NDArray[np.float32]) -> Codes:
        leaf = self._descend(item, vec)
        row = self.nearest_leaf_with_room(leaf, vec)
        suffix = int(self._leaf_used[row])
        self._leaf_used[row] += 1
        return (*(int(c) for c in self.tree.prefixes[-1][row]), suffix)

    def nearest_leaf_with_room(self, leaf: int, vec: npt.NDArray[np.float32], *, limit: int | None = None) -> int:
        """``leaf`` if it has a free suffix below ``limit``, else the nearest leaf with one,
        looking first among siblings, then cousins, and so on up to the root."""
        cap = self.config.leaf_capacity if limit is None else limit
        if self._leaf_used[leaf] < cap:
            return leaf
        prefixes = self.tree.prefixes[-1]
        has_room = self._leaf_used < cap
        for shared in range(self.config.levels - 1, -1, -1):
            same = (prefixes[:, :shared] == prefixes[leaf, :shared]).all(1) & has_room
            cand = np.flatnonzero(same)
            if cand.size:
                d = ((self.tree.centroids[-1][cand] - vec) ** 2).sum(1)
                return int(cand[int(d.argmin())])
        raise InvalidInput(f"no free suffix left in the ID space ({len(self)} items, "
                           f"`leaf_capacity`={self.config.leaf_capacity}): rebuild the IDs with more capacity")

    def _append(self, item_ids: list[str], codes: list[Codes]) -> None:
        start = len(self._ids)
        self._ids.extend(item_ids)
        self._codes = np.concatenate([self._codes, np.array(codes, np.int64).reshape(-1, self.length)])
        for i, (iid, c) in enumerate(zip(item_ids, codes, strict=True), start=start):
            self._index[iid] = i
            self._by_code[c] = iid

    # -- stats ------------------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        """Codebook health per position and overall (see :func:`tandem.ids.stats.id_stats`)."""
        from tandem.ids.stats import id_stats

        return id_stats(self)

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str) -> None:
        """Write the map to directory ``path`` (``idmap.json`` + ``arrays.npz``)."""
        from tandem.ids.persist import save_idmap

        save_idmap(self, path)

    @classmethod
    def load(cls, path: str) -> IdMap:
        """Read a map written by :meth:`save` (same major format, any minor)."""
        from tandem.ids.persist import read_idmap

        parts = read_idmap(path)
        try:
            return cls(tree=CodeTree(**parts.pop("tree")), **parts)
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptArtifact(f"{path}: inconsistent ID map ({type(exc).__name__}: {exc})") from exc


def capacity_check(n_items: int, config: SemanticIdConfig, top_nodes: int = 1) -> None:
    """Refuse shapes that cannot hold the catalog: leaves × usable suffixes < items."""
    usable = config.leaf_capacity - config.reserved_per_leaf
    sem_levels = config.levels - (config.category_levels if top_nodes > 1 else 0)
    room = top_nodes * config.branching ** sem_levels * usable
    if room < n_items:
        need = math.ceil(math.log(max(n_items / (top_nodes * usable), 1), config.branching))
        raise InvalidInput(
            f"the ID space holds at most {room} items but the catalog has {n_items}: raise `levels` "
            f"(to {need + (config.levels - sem_levels)}), `branching` or `leaf_capacity`")
