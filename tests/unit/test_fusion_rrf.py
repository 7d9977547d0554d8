"""RRF: exact scores, weights, provenance, and the Fuser contract on random inputs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tandem.errors import InvalidInput
from tandem.fusion import RRF, Evidence, RankedList
from tandem.retriever import Hit


def ranked(source: str, ids: list[str], intent: str = "", weight: float = 1.0) -> RankedList:
    hits = [Hit(i, float(len(ids) - n), source) for n, i in enumerate(ids)]
    return RankedList(source=source, hits=hits, intent=intent, intent_weight=weight)


def test_scores_are_sums_of_reciprocal_ranks() -> None:
    fused = RRF(k=60).fuse([ranked("bm25", ["a", "b", "c"]), ranked("gen", ["b", "d"])], k=10)
    scores = {h.item_id: h.score for h in fused}
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["d"] == pytest.approx(1 / 62)
    assert [h.item_id for h in fused] == ["b", "a", "d", "c"]


def test_ties_break_by_best_rank_then_id() -> None:
    fused = RRF().fuse([ranked("x", ["q", "p"]), ranked("y", ["p", "q"])], k=2)
    assert fused[0].score == pytest.approx(fused[1].score)
    assert [h.item_id for h in fused] == ["p", "q"]


def test_provenance_names_each_source_once_with_best_rank_over_intents() -> None:
    lists = [ranked("bm25", ["a", "b"], intent="drill"), ranked("bm25", ["b", "a"], intent="cordless"),
             ranked("gen", ["c", "a"])]
    fused = {h.item_id: h for h in RRF().fuse(lists, k=10)}
    assert fused["a"].provenance == (Evidence("bm25", 1, 2.0), Evidence("gen", 2, 1.0))
    assert fused["c"].provenance == (Evidence("gen", 1, 2.0),)


def test_weights_scale_sources_and_intents() -> None:
    lists = [ranked("bm25", ["a"]), ranked("gen", ["b"])]
    assert RRF(weights={"gen": 2.0}).fuse(lists, k=1)[0].item_id == "b"
    assert RRF(weights={"bm25": 2.0}).fuse(lists, k=1)[0].item_id == "a"
    lists = [ranked("bm25", ["a"], weight=0.5), ranked("bm25", ["b"], intent="x", weight=1.0)]
    assert RRF().fuse(lists, k=1)[0].item_id == "b"


def test_duplicate_ids_in_one_list_count_once() -> None:
    fused = RRF(k=1).fuse([ranked("s", ["a", "a", "b"])], k=5)
    assert {h.item_id: h.score for h in fused}["a"] == pytest.approx(1 / 2)


def test_version_reflects_parameters() -> None:
    assert RRF(k=60).version() != RRF(k=10).version()
    assert RRF(weights={"gen": 0.5}).version() != RRF().version()


@pytest.mark.parametrize("kwargs", [{"k": 0}, {"k": -1}, {"weights": {"gen": -1.0}}])
def test_bad_parameters_name_the_field(kwargs: dict) -> None:
    with pytest.raises(InvalidInput, match="`(k|weights.*)`"):
        RRF(**kwargs)


def test_k_below_one_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="`k`"):
        RRF().fuse([], k=0)


@settings(max_examples=60, deadline=None)
@given(
    lists=st.lists(st.tuples(st.sampled_from(["bm25", "gen", "x"]),
                             st.lists(st.sampled_from("abcdefghij"), max_size=8)), max_size=4),
    k=st.integers(1, 12),
)
def test_contract_on_random_lists(lists: list[tuple[str, list[str]]], k: int) -> None:
    fused = RRF().fuse([ranked(s, ids) for s, ids in lists], k=k)
    ids = [h.item_id for h in fused]
    assert len(ids) == len(set(ids)) <= k
    assert all(a.score >= b.score for a, b in zip(fused, fused[1:]))
    everything = {i for _, ids_ in lists for i in ids_}
    assert len(ids) == min(k, len(everything))
    for h in fused:
        sources = [e.source for e in h.provenance]
        assert len(sources) == len(set(sources))
        assert set(sources) == {s for s, ids_ in lists if h.item_id in ids_}
