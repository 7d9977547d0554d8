"""Fit the learned fusion on exactly the lists the gateway's fuser will see.

The candidate lists come from a :class:`~tandem.search.HybridSearcher` built as
``tandem eval --system hybrid`` builds it (same sources, intent decomposer and depth), with
a recording fuser in front of RRF: every list the searcher hands its fuser for a training
query is kept. So the slots (source × intent kind), depths and scores the model learns from
are the ones it ranks at serve time, not a re-implementation of the searcher's fan-out.

The recorder also asks every source that can score items (the generative model:
log-probability of an item's ID, encoder cosine) for all candidates, as the served searcher
does for a fuser that uses them, and keeps those item scores.

Judged queries are split (seeded) into a training part and a selection part; LightGBM's
early stopping and grid choice use the selection part, which is also where the report
compares learned fusion with RRF and with the whole-query BM25 list, and the ablation
(:data:`ABLATION`: BM25 only → + generative list → + forced-decoding score → + cosine → +
intents → + loose title matches) trains one model per row on the same split.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from tandem.errors import InvalidInput
from tandem.fusion.base import FusedHit, Fuser, ItemScores, RankedList
from tandem.fusion.features import EXACT_TITLE, TITLE_FEATURES

MEASURES = ("nDCG@10", "R(rel=4)@10", "R(rel=4)@100", "RR(rel=4)@10")


class ListRecorder(Fuser):
    """A fuser that keeps the lists and item scores of its last call and lets ``inner`` rank
    them (one search at a time: :func:`collect_candidates` runs the queries sequentially).
    ``score_names``: the item scores to have the searcher fetch for every candidate."""

    name = "recorder"

    def __init__(self, inner: Fuser, score_names: Sequence[str] = ()) -> None:
        self.inner = inner
        self.score_names = tuple(score_names)
        self._last: tuple[list[RankedList], ItemScores] | None = None

    def fuse(self, lists: Sequence[RankedList], k: int, item_scores: ItemScores | None = None) -> list[FusedHit]:
        self._last = (list(lists), dict(item_scores or {}))
        return self.inner.fuse(lists, k, item_scores)

    def take(self) -> tuple[list[RankedList], ItemScores]:
        """The lists and item scores of the last fusion (and forget them)."""
        if self._last is None:
            raise RuntimeError("no fusion was recorded since the last take()")
        last, self._last = self._last, None
        return last

    def version(self) -> str:
        return self.inner.version()


def collect_candidates(hybrid: Any, queries: Mapping[str, str], depth: int = 100
                       ) -> tuple[dict[str, list[RankedList]], dict[str, ItemScores]]:
    """Per query id: the lists ``hybrid`` (an eval ``HybridRetriever``) gives its fuser, and
    the item scores of every candidate from each source that can score items."""
    searcher = hybrid.searcher
    original = searcher.fuser
    names = tuple(n for r in searcher.retrievers for n in r.score_names)
    recorder = ListRecorder(original, names)
    searcher.fuser = recorder
    lists: dict[str, list[RankedList]] = {}
    scores: dict[str, ItemScores] = {}
    try:
        for qid, text in queries.items():
            hybrid.retrieve([text], depth)
            lists[qid], scores[qid] = recorder.take()
    finally:
        searcher.fuser = original
    return lists, scores


def select_queries(judged: Sequence[str], holdout: set[str], max_queries: int, seed: int) -> list[str]:
    """The judged query ids a fusion is fitted on: only the generative model's ``holdout``
    (queries it never trained on) when it has one, then at most ``max_queries`` (seeded sample).
    Shared by ``tandem fusion train`` and the base pipeline's fusion step."""
    ids = sorted(q for q in judged if not holdout or q in holdout)
    if len(ids) > max_queries:
        ids = sorted(random.Random(seed).sample(ids, max_queries))
    return ids


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


#: Rows of the fusion ablation: (name, which lists it sees, which item scores it uses, its title
#: features). ``lists``: ``bm25`` = the whole-query BM25 list, ``query`` = every source's
#: whole-query list, ``all`` = every list (sub-intents too).
ABLATION: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("bm25 only", "bm25", (), EXACT_TITLE),
    ("+ generative list", "query", (), EXACT_TITLE),
    ("+ forced-decoding score", "query", ("gen_logprob",), EXACT_TITLE),
    ("+ cosine", "query", ("gen_logprob", "gen_cosine"), EXACT_TITLE),
    ("+ intents", "all", ("gen_logprob", "gen_cosine"), EXACT_TITLE),
    ("+ loose title matches", "all", ("gen_logprob", "gen_cosine"), TITLE_FEATURES),
)


def _keep(lists: Sequence[RankedList], which: str) -> list[RankedList]:
    if which == "all":
        return list(lists)
    return [rl for rl in lists if rl.intent_kind == "query" and (which == "query" or rl.source == "bm25")]


def _ablation_rows(lists: Mapping[str, Sequence[RankedList]], scores: Mapping[str, ItemScores],
                   judged: Sequence[str], with_titles: bool = True
                   ) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    """The :data:`ABLATION` rows this data can fill (a row that adds nothing new is left out)."""
    sources = {rl.source for q in judged for rl in lists[q]}
    intents = any(rl.intent_kind != "query" for q in judged for rl in lists[q])
    names = {n for q in judged for per in scores.get(q, {}).values() for n in per}
    rows, seen = [], set()
    for name, which, wanted, title in ABLATION:
        if which == "all" and not intents:
            which = "query"
        if which == "query" and "generative" not in sources:
            which = "bm25"
        key = (which, tuple(n for n in wanted if n in names), title if with_titles else ())
        if key not in seen:
            seen.add(key)
            rows.append((name, *key))
    return rows


def fit_learned_fusion(lists: Mapping[str, Sequence[RankedList]], qrels: Mapping[str, Mapping[str, int]], *,
                       titles: Any = None, selection_share: float = 0.2, seed: int = 13,
                       events: Mapping[str, Mapping[str, set[str]]] | None = None, click_weight: float = 0.0,
                       purchase_weight: float = 0.0, depth: int = 100,
                       scores: Mapping[str, ItemScores] | None = None,
                       relevance_weight: float = 1.0) -> tuple[Any, dict[str, Any]]:
    """Train LambdaMART on ``lists`` (and item ``scores``) of the labelled queries; returns the
    model with everything the data has (the ablation's last row) and a report: the selection
    part's measures for each ablation row, RRF and the whole-query BM25 list, and the shipped
    model's feature importances (gain).

    Multi-task labels (λ per task): ``relevance_weight`` · grade + ``click_weight`` · [clicked]
    + ``purchase_weight`` · [purchased]. A query with behaviour ``events`` but no judgement
    (e.g. from the request log, :func:`tandem.feedback.requests.behaviour_events`) is trained
    on too; the selection measures use the judged selection queries only."""
    from tandem.eval.metrics import evaluate
    from tandem.fusion.learned import LearnedFusion, examples
    from tandem.fusion.rrf import RRF

    scores = scores or {}
    if relevance_weight < 0:
        raise InvalidInput(f"`relevance_weight` must be >= 0, got {relevance_weight}")
    judged = [q for q in lists if (q in qrels and any(g > 0 for g in qrels[q].values())) or (events or {}).get(q)]
    if len(judged) < 10:
        raise InvalidInput(f"only {len(judged)} judged queries with candidate lists; learned fusion needs >= 10")
    train_ids, sel_ids = split_queries(judged, selection_share, seed)
    sel_ids = [q for q in sel_ids if q in qrels and any(g > 0 for g in qrels[q].values())] or sel_ids
    sel_qrels = {q: qrels.get(q, {}) for q in sel_ids}
    labels = {q: {i: relevance_weight * g for i, g in qrels.get(q, {}).items()} for q in judged}

    def measure(fn: Any) -> dict[str, float]:
        run = {q: [(h.item_id, float(h.score)) for h in fn(q)] for q in sel_ids}
        res = evaluate(run, sel_qrels, list(MEASURES))
        return {m: round(float(res.metrics[m]), 4) for m in MEASURES}

    def whole_query_bm25(q: str) -> list[Any]:
        first = next((rl for rl in lists[q] if rl.source == "bm25"), None)
        return list(first.hits[:depth]) if first is not None else []

    report: dict[str, Any] = {"train_queries": len(train_ids), "selection_queries": len(sel_ids),
                              "slots": sorted({f"{rl.source}/{rl.intent_kind}" for q in judged for rl in lists[q]}),
                              "bm25 (whole query)": measure(whole_query_bm25),
                              "rrf": measure(lambda q: RRF().fuse(lists[q], depth)), "ablation": {}}
    rows = _ablation_rows(lists, scores, judged, titles is not None)
    model: Any = None
    for n, (name, which, names, title) in enumerate(rows):
        last = n == len(rows) - 1
        part = {q: _keep(lists[q], which) for q in judged}
        model, info = LearnedFusion.train(
            examples({q: part[q] for q in train_ids}, labels, events, click_weight, purchase_weight, scores),
            examples({q: part[q] for q in sel_ids}, labels, events, click_weight, purchase_weight, scores),
            titles=titles, seed=seed, score_names=names, title_features=title,
            grid=None if last else [{"num_leaves": 15, "learning_rate": 0.05, "min_data_in_leaf": 50}])
        fitted = model
        report["ablation"][name] = {"lists": which, "scores": list(names),
                                    **measure(lambda q, m=fitted, pt=part: m.fuse(pt[q], depth, scores.get(q)))}
        if last:
            report["selected"] = info
    report["learned"] = report["ablation"][rows[-1][0]]
    gains = model.booster.feature_importance("gain")
    report["feature_importance"] = {f: g for f, g in ((f, round(float(g), 1)) for f, g in sorted(
        zip(model.builder.names, gains, strict=True), key=lambda kv: -kv[1])) if g > 0}
    return model, report


__all__ = ["ABLATION", "ListRecorder", "collect_candidates", "fit_learned_fusion", "select_queries", "split_queries"]
