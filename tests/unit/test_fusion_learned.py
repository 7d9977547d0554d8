"""Learned fusion: features against hand-computed values, training on a synthetic signal,
label combination, round-trip storage."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from tandem.errors import CorruptArtifact, InvalidInput
from tandem.fusion import RankedList
from tandem.fusion.features import FeatureBuilder
from tandem.fusion.learned import Example, LearnedFusion, combine_labels, read_events, title_lookup
from tandem.retriever import Hit


def _rl(source: str, kind: str, pairs: list[tuple[str, float]], intent: str = "q", weight: float = 1.0) -> RankedList:
    return RankedList(source=source, hits=[Hit(i, s, source) for i, s in pairs], intent=intent,
                      intent_weight=weight, intent_kind=kind)


def test_features_hand_computed() -> None:
    titles = title_lookup({"a": "Delta Kitchen Faucet", "b": "Moen Shower Head", "c": "Delta Toilet Seat"})
    fb = FeatureBuilder([("bm25", "query"), ("bm25", "brand")], titles)
    lists = [_rl("bm25", "query", [("a", 9.0), ("b", 5.0), ("c", 1.0)], intent="delta faucets"),
             _rl("bm25", "brand", [("c", 3.0), ("a", 3.0)], intent="delta faucet", weight=0.5)]
    ids, X = fb.build(lists)
    assert ids == ["a", "b", "c"]
    row = dict(zip(fb.names, X[0].tolist()))
    assert row["bm25__query__rr"] == 1.0 and row["bm25__query__norm"] == 1.0 and row["bm25__query__present"] == 1.0
    assert row["bm25__brand__rr"] == 0.5 and row["bm25__brand__norm"] == 1.0  # equal scores: 1.0, no 0/0
    assert row["n_lists"] == 2 and row["n_sources"] == 1
    assert row["rrf"] == pytest.approx(1 / 61 + 0.5 / 62)
    assert row["q_in_title"] == 1.0  # "faucets" folds to "faucet"
    assert row["title_len"] == 3
    c = dict(zip(fb.names, X[2].tolist()))
    assert c["bm25__query__norm"] == 0.0 and c["q_in_title"] == 0.5 and c["sub_in_title"] == 0.5
    assert (row["q_trigram"], row["q_prefix"], row["q_bigram"], row["q_last_in_title"]) == (1.0, 1.0, 0.0, 1.0)
    assert np.isfinite(X).all()


def test_loose_title_matches_see_through_misspellings() -> None:
    """"cordles drils" shares no word with "Cordless Drill" but 8 of its 10 character trigrams
    (" co" "cor" "ord" "rdl" "dle" of " cordle ", " dr" "dri" "ril" of " dril ") and both
    4-letter prefixes; neither its word pair nor its last word is in the title."""
    fb = FeatureBuilder([("bm25", "query")], title_lookup({"a": "Cordless Drill", "b": "Garden Hose"}))
    ids, X = fb.build([_rl("bm25", "query", [("a", 2.0), ("b", 1.0)], intent="cordles drils")])
    a, b = (dict(zip(fb.names, X[j].tolist())) for j in range(2))
    assert a["q_in_title"] == 0.0 and a["q_trigram"] == pytest.approx(0.8) and a["q_prefix"] == 1.0
    assert a["q_bigram"] == 0.0 and a["q_last_in_title"] == 0.0
    assert b["q_trigram"] == 0.0 and b["q_prefix"] == 0.0


def test_a_model_fitted_before_the_loose_matches_still_loads_and_ranks() -> None:
    """Stored feature names decide the title columns: a model with the four original title
    features (an older fusion.json) is served unchanged rather than refused."""
    import lightgbm as lgb

    slots = [("bm25", "query")]
    old = FeatureBuilder(slots, title_lookup({}), title_features=("q_in_title", "sub_in_title", "type_in_title",
                                                                  "title_len"))
    assert "q_trigram" not in old.names and "title_len" in old.names
    rng = np.random.default_rng(0)
    X, y = rng.random((40, len(old.names))), rng.integers(0, 3, 40)
    booster = lgb.train({"objective": "lambdarank", "verbosity": -1, "min_data_in_leaf": 2},
                        lgb.Dataset(X, y, group=[10] * 4, feature_name=old.names), num_boost_round=3)
    titles = title_lookup({"a": "Delta Faucet", "b": "Moen Shower"})
    model = LearnedFusion(booster.model_to_string(), slots, old.names, titles=titles)
    assert model.builder.names == old.names
    assert {h.item_id for h in model.fuse([_rl("bm25", "query", [("a", 2.0), ("b", 1.0)], "delta faucet")], 2)} == {"a", "b"}


def _synthetic(n: int, seed: int) -> list[Example]:
    """BM25 ranks relevant items low; the 'gen' source finds them: a model must learn to trust gen."""
    rng = random.Random(seed)
    out = []
    for q in range(n):
        items = [f"q{q}i{j}" for j in range(12)]
        rel = set(rng.sample(items, 2))
        bm = sorted(items, key=lambda i: (i in rel, rng.random()))
        gen = sorted(items, key=lambda i: (i not in rel, rng.random()))[:6]
        lists = [_rl("bm25", "query", [(i, 10.0 - r) for r, i in enumerate(bm)]),
                 _rl("gen", "query", [(i, -float(r)) for r, i in enumerate(gen)])]
        out.append(Example(lists, dict.fromkeys(rel, 4)))
    return out


def test_learns_which_source_to_trust_and_round_trips(tmp_path) -> None:
    model, info = LearnedFusion.train(_synthetic(60, 0), _synthetic(20, 1),
                                      grid=[{"num_leaves": 4, "learning_rate": 0.2, "min_data_in_leaf": 5}])
    assert info["dev_ndcg@10_candidates"] > 0.9
    test = _synthetic(10, 2)
    hits = 0
    for ex in test:
        top2 = {h.item_id for h in model.fuse(ex.lists, k=2)}
        hits += len(top2 & set(ex.labels))
    assert hits >= 18  # RRF would put BM25's bottom items nowhere near the top
    fused = model.fuse(test[0].lists, k=12)
    assert len({h.item_id for h in fused}) == 12
    assert all(len({e.source for e in h.provenance}) == len(h.provenance) for h in fused)

    path = model.save(tmp_path / "fusion.json")
    again = LearnedFusion.load(path)
    assert [h.item_id for h in again.fuse(test[0].lists, k=5)] == [h.item_id for h in model.fuse(test[0].lists, 5)]
    assert again.version() == model.version() and again.version().startswith("learned:")


def test_equal_scores_and_empty_lists(tmp_path) -> None:
    model, _ = LearnedFusion.train(_synthetic(20, 0), _synthetic(10, 1),
                                   grid=[{"num_leaves": 4, "learning_rate": 0.2, "min_data_in_leaf": 5}])
    flat = [_rl("bm25", "query", [("x", 1.0), ("y", 1.0)]), _rl("gen", "query", [("y", 0.0)])]
    fused = model.fuse(flat, k=5)
    assert {h.item_id for h in fused} == {"x", "y"} and all(np.isfinite(h.score) for h in fused)
    assert model.fuse([], k=3) == []
    with pytest.raises(InvalidInput, match="`k`"):
        model.fuse(flat, k=0)


def test_combine_labels_and_events(tmp_path) -> None:
    labels = combine_labels({"a": 4, "b": 0}, {"b": {"click"}, "c": {"click", "purchase"}},
                            click_weight=1.0, purchase_weight=2.0)
    assert labels == {"a": 4, "b": 1, "c": 3}
    with pytest.raises(InvalidInput):
        combine_labels({}, None, click_weight=-1)
    p = tmp_path / "events.jsonl"
    p.write_text("\n".join(json.dumps(e) for e in [{"qid": "q1", "item_id": "a", "event": "click"},
                                                     {"qid": "q1", "item_id": "a", "event": "purchase"}]))
    assert read_events(p) == {"q1": {"a": {"click", "purchase"}}}
    p.write_text('{"qid": "q1", "item_id": "a", "event": "view"}\n')
    with pytest.raises(InvalidInput, match="`event`"):
        read_events(p)


def test_load_rejects_foreign_files(tmp_path) -> None:
    p = tmp_path / "x.json"
    p.write_text('{"format": "other"}')
    with pytest.raises(CorruptArtifact):
        LearnedFusion.load(p)
