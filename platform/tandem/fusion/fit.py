"""Fit the learned fusion on exactly the lists the gateway's fuser will see.

The candidate lists come from a :class:`~tandem.search.HybridSearcher` built as
``tandem eval --system hybrid`` builds it (same sources, intent decomposer and depth), with
a recording fuser in front of RRF: every list the searcher hands its fuser for a training
query is kept. So the slots (source × intent kind), depths and scores the model learns from
are the ones it ranks at serve time, not a re-implementation of the searcher's fan-out.

Judged queries are split (seeded) into a training part and a selection part; LightGBM's
early stopping and grid choice use the selection part, which is also where the report
compares learned fusion with RRF and with the whole-query BM25 list.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from tandem.errors import InvalidInput
from tandem.fusion.base import FusedHit, Fuser, RankedList

MEASURES = ("nDCG@10", "R(rel=4)@10", "R(rel=4)@100", "RR(rel=4)@10")


class ListRecorder(Fuser):
    """A fuser that keeps the lists of its last call and lets ``inner`` rank them (one
    search at a time: :func:`collect_lists` runs the queries sequentially)."""

    name = "recorder"

    def __init__(self, inner: Fuser) -> None:
        self.inner = inner
        self._last: list[RankedList] | None = None

    def fuse(self, lists: Sequence[RankedList], k: int) -> list[FusedHit]:
        self._last = list(lists)
        return self.inner.fuse(lists, k)

    def take(self) -> list[RankedList]:
        """The lists of the last fusion (and forget them)."""
        if self._last is None:
            raise RuntimeError("no fusion was recorded since the last take()")
        lists, self._last = self._last, None
        return lists

    def version(self) -> str:
        return self.inner.version()


def collect_lists(hybrid: Any, queries: Mapping[str, str], depth: int = 100) -> dict[str, list[RankedList]]:
    """Per query id: the lists ``hybrid`` (an eval ``HybridRetriever``) gives its fuser."""
    searcher = hybrid.searcher
    original = searcher.fuser
    recorder = ListRecorder(original)
    searcher.fuser = recorder
    out: dict[str, list[RankedList]] = {}
    try:
        for qid, text in queries.items():
            hybrid.retrieve([text], depth)
            out[qid] = recorder.take()
    finally:
        searcher.fuser = original
    return out


def split_queries(qids: Sequence[str], selection_share: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split of judged query ids into (train, selection)."""
    if not 0 < selection_share < 1:
        raise InvalidInput(f"`selection_share` must be in (0, 1), got {selection_share}")
    ids = sorted(qids)
    random.Random(seed).shuffle(ids)
    n_sel = max(1, round(len(ids) * selection_share))
    if len(ids) - n_sel < 1:
        raise InvalidInput(f"{len(ids)} judged queries cannot be split into train and selection parts")
    return ids[n_sel:], ids[:n_sel]


def fit_learned_fusion(lists: Mapping[str, Sequence[RankedList]], qrels: Mapping[str, Mapping[str, int]], *,
                       titles: Any = None, selection_share: float = 0.2, seed: int = 13,
                       events: Mapping[str, Mapping[str, set[str]]] | None = None, click_weight: float = 0.0,
                       purchase_weight: float = 0.0, depth: int = 100) -> tuple[Any, dict[str, Any]]:
    """Train LambdaMART on ``lists`` of the judged queries; returns the model and a report:
    the selection part's measures for learned fusion, RRF and the whole-query BM25 list."""
    from tandem.eval.metrics import evaluate
    from tandem.fusion.learned import LearnedFusion, examples
    from tandem.fusion.rrf import RRF

    judged = [q for q in lists if q in qrels and any(g > 0 for g in qrels[q].values())]
    if len(judged) < 10:
        raise InvalidInput(f"only {len(judged)} judged queries with candidate lists; learned fusion needs >= 10")
    train_ids, sel_ids = split_queries(judged, selection_share, seed)
    model, info = LearnedFusion.train(
        examples({q: lists[q] for q in train_ids}, qrels, events, click_weight, purchase_weight),
        examples({q: lists[q] for q in sel_ids}, qrels, events, click_weight, purchase_weight),
        titles=titles, seed=seed)

    def whole_query_bm25(ls: Sequence[RankedList]) -> list[Any]:
        first = next((rl for rl in ls if rl.source == "bm25"), None)
        return list(first.hits[:depth]) if first is not None else []

    systems = {"learned": lambda ls: model.fuse(ls, depth), "rrf": lambda ls: RRF().fuse(ls, depth),
               "bm25 (whole query)": whole_query_bm25}
    report: dict[str, Any] = {"train_queries": len(train_ids), "selection_queries": len(sel_ids),
                              "slots": sorted({f"{rl.source}/{rl.intent_kind}" for q in judged for rl in lists[q]}),
                              "selected": info}
    sel_qrels = {q: qrels[q] for q in sel_ids}
    for name, fn in systems.items():
        run = {q: [(h.item_id, float(h.score)) for h in fn(lists[q])] for q in sel_ids}
        res = evaluate(run, sel_qrels, list(MEASURES))
        report[name] = {m: round(float(res.metrics[m]), 4) for m in MEASURES}
    return model, report


__all__ = ["ListRecorder", "collect_lists", "fit_learned_fusion", "split_queries"]
