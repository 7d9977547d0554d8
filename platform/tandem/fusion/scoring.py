"""Item scores for fusion: ask the sources that can score items about every candidate.

A fuser that declares :attr:`~tandem.fusion.base.Fuser.score_names` (learned fusion trained
with the generative model's forced-decoding log-probability and the encoder cosine) gets,
for each candidate any source found, the scores of every source that gives some of those
names (:meth:`~tandem.retriever.Retriever.score_items`) — one batched call per source, under
the search's deadline. A source that fails or is late adds a degraded reason and its
scores are simply missing (the features carry a presence flag): never a failed search.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Executor
from concurrent.futures import TimeoutError as FutureTimeout

from tandem.fusion.base import ItemScores, RankedList
from tandem.retriever import MAX_SCORED_ITEMS, Retriever


def candidate_ids(lists: Sequence[RankedList]) -> list[str]:
    """Unique item ids of ``lists`` in first-seen order (at most :data:`MAX_SCORED_ITEMS`)."""
    return list(dict.fromkeys(h.item_id for rl in lists for h in rl.hits))[:MAX_SCORED_ITEMS]


def score_candidates(sources: Sequence[Retriever], wanted: Sequence[str], query: str, lists: Sequence[RankedList],
                     pool: Executor, deadline: float, reasons: list[str]) -> ItemScores:
    """``{item_id: {name: value}}`` for the candidates of ``lists`` from the ``sources`` that give
    any of the ``wanted`` scores; failures and timeouts are appended to ``reasons``.

    ``deadline`` is a :func:`time.monotonic` instant; all sources are asked in parallel.
    """
    want = set(wanted)
    scorers = [r for r in sources if want & set(r.score_names)]
    ids = candidate_ids(lists)
    if not scorers or not ids:
        return {}
    futures = [(r, pool.submit(r.score_items, query, ids)) for r in scorers]
    out: dict[str, dict[str, float]] = {}
    for r, fut in futures:
        try:
            got = fut.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            fut.cancel()
            reasons.append(f"{r.name} item scores: no answer within the deadline")
            continue
        except Exception as exc:  # noqa: BLE001 - missing scores are flagged features, not a failed search
            reasons.append(f"{r.name} item scores: {type(exc).__name__}: {exc}"[:300])
            continue
        names = tuple(r.score_names)
        for item, vals in zip(ids, got, strict=True):
            if vals is not None:
                out.setdefault(item, {}).update(zip(names, map(float, vals), strict=True))
    return out
