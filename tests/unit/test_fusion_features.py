"""The vectorised fusion features and ranking equal the straightforward per-candidate
computation (kept here as the reference) on randomised lists: duplicates within a list,
several sources and intents, a slot the model does not know, titles, missing item scores."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

import numpy as np
import pytest

from tandem.fusion import RankedList
from tandem.fusion.base import Evidence
from tandem.fusion.features import FeatureBuilder
from tandem.fusion.learned import LearnedFusion, title_lookup
from tandem.fusion.normalized import normalize_scores
from tandem.retriever import Hit

WORDS = ["drill", "cordless", "delta", "faucets", "kitchen", "hose", "garden", "paint", "white", "led", "cordles",
         "drils", "kitch"]  # misspellings and word forms: the loose matches see them


def _words(text: str) -> list[str]:
    return [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in re.findall(r"[a-z0-9]+", text.lower())]


def _stems(text: str) -> set[str]:
    return set(_words(text))


def _loose(query: str, title: str) -> list[float]:
    """The loose title matches by set arithmetic on words (the builder searches padded strings)."""
    q, t = _words(query), _words(title)
    if not q:
        return [0.0] * 4
    tri = {w: {f" {w} "[i:i + 3] for i in range(len(w))} for w in q + t}
    qt, tt = set().union(*(tri[w] for w in q)), set().union(set(), *(tri[w] for w in t))
    qp, tp = {w[:4] for w in q if len(w) >= 4}, {w[:4] for w in t if len(w) >= 4}
    qb, tb = set(zip(q, q[1:])), set(zip(t, t[1:]))
    return [len(qt & tt) / len(qt), len(qp & tp) / len(qp) if qp else 0.0, len(qb & tb) / len(qb) if qb else 0.0,
            float(q[-1] in t)]


def _reference(fb: FeatureBuilder, lists: Sequence[RankedList], item_scores: dict | None):
    """The per-candidate loops the builder replaced: rows of Python floats, evidence dicts."""
    base, width = 3 * len(fb.slots), len(fb.names)
    rows: dict[str, list[float]] = {}
    ev: dict[str, dict[str, tuple[int, float]]] = {}
    for rl in lists:
        s = fb._index.get((rl.source, rl.intent_kind))
        seen: set[str] = set()
        for rank, (h, norm) in enumerate(zip(rl.hits, normalize_scores([h.score for h in rl.hits], "minmax")), 1):
            if h.item_id in seen:
                continue
            seen.add(h.item_id)
            row = rows.setdefault(h.item_id, [0.0] * width)
            e = ev.setdefault(h.item_id, {})
            if rl.source not in e or rank < e[rl.source][0]:
                e[rl.source] = (rank, h.score)
            row[base] += 1
            row[base + 2] += rl.intent_weight / (fb.rrf_k + rank)
            row[base + 3] = max(row[base + 3], 1.0 / rank)
            if s is not None:
                row[3 * s] = max(row[3 * s], 1.0 / rank)
                row[3 * s + 1] = max(row[3 * s + 1], norm)
                row[3 * s + 2] = 1.0
    ids = list(rows)
    for i in ids:
        rows[i][base + 1] = len(ev[i])
    if fb.titles is not None and ids:
        titles = fb.titles(ids)
        query = next((rl.intent for rl in lists if rl.intent_kind == "query"), lists[0].intent)
        q = _stems(query)
        subs = [sb for sb in (_stems(rl.intent) for rl in lists if rl.intent_kind not in ("query", "normalized")) if sb]
        typ = next((_stems(rl.intent) for rl in lists if rl.intent_kind == "product_type"), set())
        for i in ids:
            st, t0 = _stems(titles.get(i, "")), base + 4
            rows[i][t0] = len(q & st) / len(q) if q else 0.0
            rows[i][t0 + 1] = max((len(sb & st) / len(sb) for sb in subs), default=0.0)
            rows[i][t0 + 2] = float(bool(typ) and typ <= st)
            rows[i][t0 + 3] = len(titles.get(i, "").split())
            rows[i][t0 + 4:t0 + 8] = _loose(query, titles.get(i, ""))
    if fb.score_names and ids:
        start = width - 1 - 2 * len(fb.score_names)
        for j, name in enumerate(fb.score_names):
            vals = {i: v for i in ids if (v := ((item_scores or {}).get(i) or {}).get(name)) is not None}
            for i, v in vals.items():
                rows[i][start + 2 * j], rows[i][start + 2 * j + 1] = v, v - max(vals.values())
        for i in ids:
            rows[i][-1] = float(bool((item_scores or {}).get(i)))
    return ids, np.array([rows[i] for i in ids], np.float32).reshape(len(ids), width), ev


def _case(rng: random.Random, n_items: int = 60):
    items = [f"i{j}" for j in range(n_items)]
    titles = {i: " ".join(rng.sample(WORDS, rng.randint(0, 5))) for i in items if rng.random() < 0.9}
    lists = []
    for source, kind, intent in [("bm25", "query", "cordless drills"), ("generative", "query", "cordless drills"),
                                 ("bm25", "product_type", "drill"), ("bm25", "brand", "delta"),
                                 ("bm25", "brand", "kitchen delta"),  # a slot filled by two lists
                                 ("generative", "unknown_kind", "led paint")]:
        hits = [Hit(rng.choice(items), round(rng.uniform(-5, 5), 1), source) for _ in range(rng.randint(0, 40))]
        lists.append(RankedList(source, hits, intent, rng.choice([1.0, 0.5]), kind))
    scores = {i: ({"gen_logprob": -rng.random() * 9, "gen_cosine": rng.random()} if rng.random() < 0.8 else
                  {"gen_cosine": rng.random()} if rng.random() < 0.5 else {}) for i in items}
    return lists, scores, title_lookup(titles)


SLOTS = [("bm25", "query"), ("generative", "query"), ("bm25", "product_type"), ("bm25", "brand")]


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_features_equal_the_per_candidate_reference(seed: int) -> None:
    lists, scores, titles = _case(random.Random(seed))
    fb = FeatureBuilder(SLOTS, titles, score_names=("gen_logprob", "gen_cosine"))
    for _ in range(2):  # the second pass reads titles from the cache
        c = fb.candidates(lists, scores)
        ids, X, ev = _reference(fb, lists, scores)
        assert c.ids == ids and c.X.dtype == np.float32 and np.array_equal(c.X, X)
        want = [tuple(Evidence(s, r, sc) for s, (r, sc) in sorted(ev[i].items(), key=lambda kv: (kv[1][0], kv[0])))
                for i in ids]
        assert c.provenance(list(range(len(ids)))) == want
    plain = FeatureBuilder(SLOTS)  # no titles, no item scores
    assert np.array_equal(plain.build(lists)[1], _reference(plain, lists, None)[1])


def test_empty_lists_give_no_candidates() -> None:
    fb = FeatureBuilder(SLOTS, title_lookup({}), score_names=("gen_logprob",))
    c = fb.candidates([RankedList("bm25", [], "q")], {})
    assert c.ids == [] and c.X.shape == (0, len(fb.names))


class _Booster:
    """Stands in for LightGBM: a fixed linear score with many ties."""

    def predict(self, X: np.ndarray, num_threads: int = 1) -> np.ndarray:
        assert X.dtype == np.float32 and X.flags.c_contiguous and num_threads == 1
        return np.round(X[:, 0] * 2) / 2


def test_learned_ranking_matches_the_sorted_reference() -> None:
    lists, scores, titles = _case(random.Random(9), n_items=30)
    fusion = LearnedFusion.__new__(LearnedFusion)
    fusion.builder, fusion.booster = FeatureBuilder(SLOTS), _Booster()
    got = fusion.fuse(lists, 25)
    ids, X, ev = _reference(fusion.builder, lists, None)
    s = _Booster().predict(X)
    best = {i: min(r for r, _ in ev[i].values()) for i in ids}
    want = sorted(range(len(ids)), key=lambda j: (-s[j], best[ids[j]], ids[j]))[:25]
    assert [h.item_id for h in got] == [ids[j] for j in want]
    assert [h.score for h in got] == [float(s[j]) for j in want]
