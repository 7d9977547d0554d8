"""Normalised score fusion against hand-computed examples."""

from __future__ import annotations

import math

import pytest

from tandem.errors import InvalidInput
from tandem.fusion import RankedList
from tandem.fusion.normalized import ScoreFusion, normalize_scores
from tandem.retriever import Hit


def _list(source: str, pairs: list[tuple[str, float]], weight: float = 1.0) -> RankedList:
    return RankedList(source=source, hits=[Hit(i, s, source) for i, s in pairs], intent_weight=weight)


def test_minmax_hand_computed() -> None:
    assert normalize_scores([10.0, 6.0, 2.0], "minmax") == [1.0, 0.5, 0.0]


def test_zscore_hand_computed() -> None:
    # mean 4, population std sqrt(8/3); z = ±1.2247, 0 → shifted by the minimum
    z = normalize_scores([6.0, 4.0, 2.0], "zscore")
    s = math.sqrt(8 / 3)
    assert z == pytest.approx([4 / s, 2 / s, 0.0])


@pytest.mark.parametrize("method", ["minmax", "zscore"])
def test_equal_scores_do_not_divide_by_zero(method: str) -> None:
    out = normalize_scores([3.0, 3.0, 3.0], method)
    assert out == ([1.0] * 3 if method == "minmax" else [0.0] * 3)
    assert normalize_scores([7.0], method) in ([1.0], [0.0])
    assert normalize_scores([], method) == []
    fused = ScoreFusion(method).fuse([_list("a", [("x", 1.0), ("y", 1.0)])], k=5)
    assert [h.item_id for h in fused] == ["x", "y"]  # equal score: tie broken by rank
    assert all(math.isfinite(h.score) for h in fused)


def test_minmax_fusion_with_weights_hand_computed() -> None:
    bm25 = _list("bm25", [("a", 12.0), ("b", 8.0), ("c", 4.0)])  # → 1, .5, 0
    gen = _list("gen", [("c", -0.1), ("b", -1.1)])  # → 1, 0
    fused = ScoreFusion("minmax", weights={"gen": 2.0}).fuse([bm25, gen], k=3)
    scores = {h.item_id: h.score for h in fused}
    assert scores == pytest.approx({"a": 1.0, "b": 0.5, "c": 2.0})
    assert [h.item_id for h in fused] == ["c", "a", "b"]
    c = fused[0]
    assert [(e.source, e.rank, e.score) for e in c.provenance] == [("gen", 1, -0.1), ("bm25", 3, 4.0)]


def test_intent_weight_scales_and_duplicates_count_once() -> None:
    whole = _list("bm25", [("a", 2.0), ("b", 1.0)])
    sub = _list("bm25", [("b", 5.0), ("b", 5.0), ("c", 1.0)], weight=0.5)
    fused = ScoreFusion("minmax").fuse([whole, sub], k=2)
    assert {h.item_id: h.score for h in fused} == pytest.approx({"a": 1.0, "b": 0.5})
    assert len(fused[1].provenance) == 1 and fused[1].provenance[0].rank == 1


def test_rejects_bad_parameters() -> None:
    with pytest.raises(InvalidInput, match="`method`"):
        ScoreFusion("sum")
    with pytest.raises(InvalidInput, match="`weights"):
        ScoreFusion("minmax", weights={"bm25": -1})
    with pytest.raises(InvalidInput, match="`k`"):
        ScoreFusion().fuse([], k=0)
    assert ScoreFusion("zscore", {"bm25": 0.5}).version() == "zscore:bm25=0.5"
