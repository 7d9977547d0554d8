"""Sharded generative serving: one :class:`~tandem.retriever.Retriever` over N shard retrievers.

A catalog too large for one generative service is split by the **top-level code** of its
semantic IDs: shard ``i`` of ``N`` holds the items under the top-level codes ``c`` with
``c % N == i`` (:func:`shard_of_code`; stable as items are added, since a new item keeps its
leaf's top-level code, and the balanced clustering keeps the shards near equal). Each shard
holds only its items' rows of the item level (see :mod:`tandem.generative.tree_shards`); the
decoder and the cluster levels are shared, so every shard walks the cluster levels exactly as
one unsharded model does and scores at the item level only its share of that model's
candidates.

:class:`ShardedRetriever` is the composite the gateway's searcher sees in place of one
generative source: it fans a batch out to the shards (local or
:class:`~tandem_services.client.RemoteRetriever`), in parallel on a bounded pool, and merges
their hits by score. Scores of different shards are comparable because they are the same
decoder's item-level logits. With one shard it is a pass-through.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from tandem.errors import InvalidInput
from tandem.retriever import Hit, Retriever, validate_queries, validate_scoring

#: Upper bound on shards: each is a service and a thread of the fan-out pool.
MAX_SHARDS = 256

#: Picks, per query, the shards worth asking (``None``: all of them).
Router = Callable[[Sequence[str]], list[set[int]]]


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/N"`` → ``(i, N)`` with ``0 <= i < N <= MAX_SHARDS``; a clear error otherwise."""
    head, sep, tail = str(spec).partition("/")
    try:
        if not sep:
            raise ValueError
        index, count = int(head), int(tail)
    except ValueError:
        raise InvalidInput(f"`shard` must look like i/N (e.g. 0/4), got {spec!r}") from None
    if not 1 <= count <= MAX_SHARDS or not 0 <= index < count:
        raise InvalidInput(f"`shard` {spec!r}: need 0 <= i < N and 1 <= N <= {MAX_SHARDS}")
    return index, count


def shard_of_code(top_code: int, count: int) -> int:
    """The shard that holds the subtree of top-level code ``top_code`` among ``count`` shards."""
    return int(top_code) % count


def merge_hits(lists: Sequence[Sequence[Hit]], k: int, name: str) -> list[Hit]:
    """The ``k`` best hits of several shards' lists (best score first, equal scores by item id,
    as :meth:`~tandem.generative.tree_retriever.TreeRetriever.retrieve` orders them; an item
    once, at its best score)."""
    best: dict[str, float] = {}
    for hits in lists:
        for h in hits:
            if h.item_id not in best or h.score > best[h.item_id]:
                best[h.item_id] = h.score
    top = heapq.nsmallest(k, best.items(), key=lambda kv: (-kv[1], kv[0]))
    return [Hit(item, score, name) for item, score in top]


class ShardedRetriever(Retriever):
    """Fan-out over shard retrievers and merge by score; see the module docstring."""

    def __init__(self, shards: Sequence[Retriever], *, name: str = "generative", router: Router | None = None,
                 max_workers: int | None = None) -> None:
        """``shards`` in shard order (shard ``i`` holds top-level codes ``c % N == i``);
        ``router`` may narrow the shards asked per query (default: all; each shard then drops
        the queries whose first decoding step picked none of its codes by itself)."""
        if not shards:
            raise InvalidInput("`shards` must name at least one shard retriever")
        if len(shards) > MAX_SHARDS:
            raise InvalidInput(f"`shards`: at most {MAX_SHARDS}, got {len(shards)}")
        if max_workers is not None and max_workers < 1:
            raise InvalidInput("`max_workers` must be >= 1")
        self.shards = list(shards)
        self.name = name
        self.router = router
        self._pool = (ThreadPoolExecutor(max_workers=max_workers or len(self.shards), thread_name_prefix="shard")
                      if len(self.shards) > 1 else None)

    @property
    def score_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """The shards' item-score names (the same decoder, so the same names)."""
        return tuple(self.shards[0].score_names)

    def version(self) -> str:
        """The shards' versions joined: any shard's change changes it."""
        if len(self.shards) == 1:
            return self.shards[0].version()
        return "|".join(s.version() for s in self.shards)

    def _routes(self, queries: Sequence[str]) -> list[list[int]]:
        """Per shard, the positions of the queries it is asked."""
        everyone = list(range(len(queries)))
        if self.router is None:
            return [everyone for _ in self.shards]
        picks = self.router(queries)
        if len(picks) != len(queries):
            raise RuntimeError(f"the shard router answered {len(picks)} rows for {len(queries)} queries")
        return [[i for i, p in enumerate(picks) if s in p] for s in range(len(self.shards))]

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top ``k`` per query over all shards; see :class:`Retriever`. A failing shard fails the call
        (the searcher reports the generative source degraded) rather than answer from part of the catalog."""
        validate_queries(queries, k)
        if not queries:
            return []
        if self._pool is None:
            return [merge_hits([hits], k, self.name) for hits in self.shards[0].retrieve(queries, k)]
        routes = self._routes(queries)
        futures = [(pos, self._pool.submit(shard.retrieve, [queries[i] for i in pos], k))
                   for shard, pos in zip(self.shards, routes, strict=True) if pos]
        per_query: list[list[list[Hit]]] = [[] for _ in queries]
        for pos, fut in futures:
            for i, hits in zip(pos, fut.result(), strict=True):
                per_query[i].append(hits)
        return [merge_hits(lists, k, self.name) for lists in per_query]

    def score_items(self, query: str, item_ids: Sequence[str]) -> list[tuple[float, ...] | None]:
        """Each item's scores from the shard that holds it (``None`` where no shard does)."""
        validate_scoring(query, item_ids)
        if not self.score_names:
            raise NotImplementedError(f"source {self.name!r} does not score items")
        out: list[tuple[float, ...] | None] = [None] * len(item_ids)
        answers = ([self._pool.submit(s.score_items, query, item_ids) for s in self.shards] if self._pool
                   else None)
        for n, shard in enumerate(self.shards):
            scores = answers[n].result() if answers is not None else shard.score_items(query, item_ids)
            for i, s in enumerate(scores):
                if out[i] is None and s is not None:
                    out[i] = s
        return out

    def refresh(self) -> bool:
        """Refresh every shard that can; ``True`` when any changed."""
        changed = False
        for s in self.shards:
            if s.refreshable:
                changed = bool(s.refresh()) or changed
        return changed

    def close(self) -> None:
        """Close every shard and the fan-out pool. Idempotent."""
        for s in self.shards:
            s.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
