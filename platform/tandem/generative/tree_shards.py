"""One shard of a v2 generative model: its items, with the decoder and the cluster levels shared.

Shard ``i`` of ``N`` (:func:`~tandem.generative.sharding.shard_of_code`) holds the items whose
top-level code is one of its own and keeps:

- the whole decoder and every **cluster** level's node table (all positions but the last),
  so its beam at every cluster level is exactly the unsharded model's beam: the same nodes,
  scored by the same numbers, pruned to the same ``upper_beam``;
- only its own rows of the **item** level: the child table of a leaf cluster lists the
  shard's items only, so a beam that reaches a leaf of another shard ends there.

So each shard's candidates at the item level are exactly its share of one model's
candidates, and merging the shards' top ``k`` by score
(:class:`~tandem.generative.sharding.ShardedRetriever`) gives one model's top ``k`` whatever
the beams prune (ties and floating-point rounding aside): item scores (``rank="last"``: the
item logit; ``"path"``: the summed level log-probabilities, global at every cluster level)
are the same numbers as unsharded. The item level is what grows with the catalog (54,667
item rows against 4,160 cluster nodes on Home Depot), so a shard's tables shrink almost by
``N``; what every shard repeats is the decoder's steps and the cluster levels. Limits:
``gen_logprob`` of :meth:`score_items` is normalised over the shard's own items at the last
position (comparable within a shard, not across); shards load the full model before slicing
(peak memory at start-up is one full model).

An earlier design also sliced the cluster levels to the shard's subtrees; each shard then
kept its own ``upper_beam`` best clusters instead of its share of one global beam, and the
merged top 10 matched one model's on only 0.969 of dev (2 shards, 640 queries).

:func:`open_sharded_tree_retriever` builds all shards of one folder in one process sharing the
encoder and each batch's encoding (the local composite); the generative service serves one
shard with ``tandem serve generative --shard i/N``.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from tandem.errors import InvalidInput
from tandem.generative.sharding import ShardedRetriever, shard_of_code
from tandem.generative.tree_decoding import TreeIndex
from tandem.generative.tree_model import TreeDecoder
from tandem.generative.tree_retriever import TreeRetriever
from tandem.retriever import Retriever

#: What :meth:`TreeRetriever._encode` returns for a batch (tensors, and per-query rows last).
Encoded = Any


def shard_rows(codes: npt.NDArray[np.int64], shard: int, count: int) -> npt.NDArray[np.int64]:
    """Item rows of ``codes`` ``[items, L]`` whose top-level code belongs to ``shard`` of ``count``."""
    return np.flatnonzero(np.asarray(codes)[:, 0] % count == shard)


class ShardTreeIndex(TreeIndex):
    """A :class:`TreeIndex` over some items' rows that keeps the full tree's cluster levels.

    Every position but the last has ``full``'s nodes, numbering and child tables (shared, not
    copied); the last position holds the shard's items (row ``r`` here is ``rows[r]`` in
    ``full``) and each leaf cluster's children are its items in this shard only.
    ``node_maps[p]`` gives, per node of position ``p`` here, its node (row at the last
    position) in ``full``.
    """

    def __init__(self, codes: npt.ArrayLike, rows: npt.NDArray[np.int64], full: TreeIndex) -> None:
        arr = np.asarray(codes, dtype=np.int64)
        rows = np.asarray(rows, np.int64)
        if len(rows) == 0:
            raise InvalidInput("this shard holds no items: use fewer shards than top-level codes")
        if arr.shape[0] != len(full.paths):
            raise InvalidInput(f"`codes` has {arr.shape[0]} rows but the full tree {len(full.paths)} items")
        self.length = full.length
        self.paths = full.paths[rows].copy()
        self.paths[:, -1] = np.arange(len(rows))
        self._node_of = list(full._node_of)  # read-only here: add() looks prefixes up
        leaves: list[list[int]] = [[] for _ in range(len(full._node_of[-1]))]
        for local, leaf in enumerate(self.paths[:, -2].tolist()):
            leaves[leaf].append(local)
        self._children = [*full._children[:-1], leaves]
        self._tables = None
        self.node_maps: list[npt.NDArray[np.int64]] = [np.arange(n) for n in full.nodes_per_position[:-1]]
        self.node_maps.append(rows)


class SharedEncodings:
    """The encoder outputs of recent batches, computed once however many shards ask (bounded)."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._batches: OrderedDict[tuple[str, ...], Future[Encoded]] = OrderedDict()

    def get(self, queries: Sequence[str], encode: Callable[[Sequence[str]], Encoded]) -> Encoded:
        """``encode(queries)``, or the result of the same batch's encoding by another shard."""
        key = tuple(queries)
        with self._lock:
            fut = self._batches.get(key)
            owner = fut is None
            if owner:
                fut = self._batches[key] = Future()
                while len(self._batches) > self.capacity:
                    self._batches.popitem(last=False)
        assert fut is not None
        if owner:
            try:
                fut.set_result(encode(queries))
            except BaseException as exc:
                fut.set_exception(exc)
                with self._lock:
                    self._batches.pop(key, None)
        return fut.result()


class ShardTreeRetriever(TreeRetriever):
    """A :class:`TreeRetriever` serving shard ``shard`` of ``count``; see the module docstring."""

    def __init__(self, model_dir: str | Path, shard: int, count: int, *, source: TreeRetriever | None = None,
                 encodings: SharedEncodings | None = None, **options: Any) -> None:
        """Load ``model_dir`` (or view the already loaded, unsharded ``source``: encoder and
        decoder shared, node tables sliced) and keep shard ``shard``'s subtrees."""
        if not 0 <= shard < count:
            raise InvalidInput(f"`shard` must be in [0, {count}), got {shard}")
        if source is None:
            super().__init__(model_dir, **options)
        else:
            self.__dict__.update(source.__dict__)  # shares the encoder and the decoder's weights
            self._recent, self._recent_lock = OrderedDict(), threading.Lock()
        self.shard, self.count, self._encodings = shard, count, encodings
        self._restrict()

    def _restrict(self) -> None:
        from dataclasses import replace

        art = self.artifact
        model, index, rows = shard_view(art.model, art.index, art.id_map.as_array(), self.shard, self.count)
        self.artifact = replace(art, model=model, index=index)
        all_ids = art.id_map.item_ids()
        self._item_ids = [all_ids[r] for r in rows.tolist()]
        self._row_of = {iid: row for row, iid in enumerate(self._item_ids)}
        self._version = f"{self._version}-shard{self.shard}of{self.count}"
        # feedback re-ranks a query's whole beam around its best hits; a shard sees only its own
        # items, so its centroid (and its scores) would differ from its siblings' and the merged
        # lists would not compare: a sharded deployment serves without it
        self.prf = None

    def _encode(self, queries: Sequence[str]) -> Any:
        if self._encodings is None:
            return super()._encode(queries)
        res = self._encodings.get(queries, super()._encode)
        if not (isinstance(res, tuple) and res and isinstance(res[-1], list)):
            return res
        # Per-query rows come last: each shard gets its own copies, since beam search records its
        # (shard-specific) decoder levels on them. Only the encoding shard remembers the query.
        rows = [copy.copy(r) for r in res[-1]]
        for r in rows:
            if hasattr(r, "levels"):
                r.levels = None
        return (*res[:-1], rows)

    def add_items(self, items: Sequence[Any]) -> dict[str, tuple[int, ...]]:
        """Assign IDs to all ``items`` (every shard assigns the same, deterministically) and make
        decodable those whose top-level code is this shard's."""
        from tandem.ids.idmap import coerce_items

        batch = coerce_items(items)
        codes = self.artifact.id_map.assign(batch)
        mine = [it for it in batch if shard_of_code(codes[it.item_id][0], self.count) == self.shard]
        if mine:
            super().add_items(mine)
        return codes


def _shallow_copy(model: torch.nn.Module) -> Any:
    """A module sharing ``model``'s parameters whose sub-modules can be replaced independently."""
    clone = model.__class__.__new__(model.__class__)
    clone.__dict__.update(model.__dict__)
    clone._modules = dict(model._modules)
    clone._parameters = dict(model._parameters)
    return clone


def shard_view(model: TreeDecoder, index: TreeIndex, codes: npt.NDArray[np.int64], shard: int,
               count: int) -> tuple[TreeDecoder, ShardTreeIndex, npt.NDArray[np.int64]]:
    """Shard ``shard`` of ``count`` of a decoder and its tree: a decoder sharing ``model``'s
    weights and cluster-level tables with the item table sliced to the shard's rows, its
    :class:`ShardTreeIndex`, and the full tree's item rows it holds (in the shard's row order)."""
    rows = shard_rows(codes, shard, count)
    sub = ShardTreeIndex(codes, rows, index)
    view = _shallow_copy(model)
    items = torch.nn.Parameter(model.nodes[-1].data[torch.from_numpy(rows)], requires_grad=False)
    view.nodes = torch.nn.ParameterList([*list(model.nodes)[:-1], items])
    return view, sub, rows


def open_shard_retriever(model_dir: str | Path, shard: int, count: int, **options: Any) -> Retriever:
    """What ``tandem serve generative --shard i/N`` serves: with ``count`` 1 the plain retriever."""
    from tandem.generative.tree_artifact import is_tree_folder
    from tandem.generative.tree_retriever import open_tree_retriever

    if not is_tree_folder(Path(model_dir)):
        raise InvalidInput(f"`shard`: {model_dir} is not a v2 (tree) model folder; only those can be sharded")
    base = open_tree_retriever(Path(model_dir), **options)
    if count == 1:
        return base
    return ShardTreeRetriever(model_dir, shard, count, source=base)


def open_sharded_tree_retriever(model_dir: str | Path, count: int, **options: Any) -> Retriever:
    """All ``count`` shards of ``model_dir`` in this process behind a :class:`ShardedRetriever`
    (one encoder and one encoding per batch for all); with ``count`` 1 the plain retriever."""
    from tandem.generative.tree_retriever import open_tree_retriever

    base = open_tree_retriever(Path(model_dir), **options)
    if count == 1:
        return base
    shared = SharedEncodings()
    shards = [ShardTreeRetriever(model_dir, i, count, source=base, encodings=shared) for i in range(count)]
    return ShardedRetriever(shards, name=base.name)
