"""Item scores for fusion (issue 18): forced decoding of any item's ID, the score features,
learned fusion that uses them, the searcher fetching them under its deadline, the ablation."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from tandem.errors import InvalidInput
from tandem.fusion import RankedList
from tandem.fusion.features import FeatureBuilder
from tandem.fusion.fit import fit_learned_fusion
from tandem.fusion.learned import Example, LearnedFusion
from tandem.generative.tree_decoding import (TreeIndex, forced_log_probs, host_rows, level_log_probs, query_levels,
                                             tree_beam_search_levels)
from tandem.generative.tree_model import TreeDecoder, TreeDecoderConfig
from tandem.retriever import Hit, Retriever, validate_queries
from tandem.search.orchestrator import HybridSearcher
from tandem.search.request import SearchConfig, SearchRequest

CODES = np.array([[a, b, c] for a in range(3) for b in range(2) for c in range(3)])


def _model(conditioned: bool) -> tuple[TreeDecoder, TreeIndex, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    index = TreeIndex(CODES)
    model = TreeDecoder(16, index.nodes_per_position, TreeDecoderConfig(condition_on_prefix=conditioned))
    with torch.no_grad():
        for t in model.nodes:
            t.normal_()
        torch.nn.init.normal_(model.out.weight, std=0.2)
    q = torch.nn.functional.normalize(torch.randn(1, 16), dim=-1)
    return model.eval(), index, (q, torch.randn(1, 5, 16), torch.ones(1, 5, dtype=torch.long))


def test_forced_log_probs_are_the_per_level_full_softmax() -> None:
    model, index, (q, st, mk) = _model(conditioned=False)
    rows = torch.tensor([0, 7, 17, 7])
    got = forced_log_probs(model, index, q, st, mk, rows)
    kv, bias = model.memory(st, mk)
    want = torch.zeros(4)
    for p in range(index.length):
        level = model.logits(p, model.step(p, None, q, kv, bias)[:, 0])[0].log_softmax(-1)
        want += level[torch.from_numpy(index.paths[rows.numpy(), p])]
    assert torch.allclose(got, want, atol=1e-5) and got[1] == got[3]


def test_forced_log_probs_of_a_prefix_conditioned_decoder_are_a_distribution_over_items() -> None:
    model, index, (q, st, mk) = _model(conditioned=True)
    got = forced_log_probs(model, index, q, st, mk, torch.arange(len(CODES)))
    assert float(got.exp().sum()) == pytest.approx(1.0, abs=1e-4)  # the trie-constrained chain rule
    with pytest.raises(InvalidInput):
        forced_log_probs(model, index, q.repeat(2, 1), st.repeat(2, 1, 1), mk.repeat(2, 1), torch.arange(2))


def _straightforward(model: TreeDecoder, index: TreeIndex, q: torch.Tensor, st: torch.Tensor, mk: torch.Tensor,
                     rows: torch.Tensor) -> torch.Tensor:
    """Forced decoding as first written: every candidate's own path, one decoder step per candidate."""
    kv, bias = model.memory(st, mk)
    paths = torch.from_numpy(index.paths)[rows]
    total = torch.zeros(len(rows))
    for p in range(index.length):
        if p == 0 or not model.decoder_config.condition_on_prefix:
            level = model.logits(p, model.step(p, None, q, kv, bias)[:, 0])[0]
            total += level[paths[:, p]] - level.logsumexp(-1)
        else:
            cand = index.tables()[p - 1][paths[None, :, p - 1]]
            lg = model.logits(p, model.step(p, paths[None, :, p - 1], q, kv, bias), cand).masked_fill(cand < 0, -1e9)
            gold = (cand == paths[None, :, p, None]).float().argmax(-1)
            total += (lg.gather(-1, gold[..., None]).squeeze(-1) - lg.logsumexp(-1))[0]
    return total


@torch.inference_mode()
def test_levels_kept_from_beam_search_score_items_as_the_straightforward_forced_decoding() -> None:
    model, index, (q, st, mk) = _model(conditioned=False)
    q2, st2 = torch.nn.functional.normalize(torch.randn(1, 16), dim=-1), torch.randn(1, 5, 16)
    mk2 = torch.tensor([[1, 1, 1, 0, 0]])  # padded in the batch
    _, _, levels = tree_beam_search_levels(model, index, torch.cat([q, q2]), torch.cat([st, st2]),
                                           torch.cat([mk, mk2]), beams=[2, 4, 5])
    assert levels is not None and levels.states.shape == (2, 3, 16)
    rows = torch.tensor([17, 0, 7, 8, 7])  # shared prefixes and a repeated item
    for i, (qi, sti, mki) in enumerate([(q, st, mk), (q2, st2[:, :3], mk2[:, :3])]):
        want = _straightforward(model, index, qi, sti, mki, rows)
        assert torch.allclose(level_log_probs(model, index, levels.row(i), rows), want, atol=1e-5)
        assert torch.allclose(level_log_probs(model, index, query_levels(model, qi, sti, mki), rows), want, atol=1e-5)
    with pytest.raises(InvalidInput, match="one query"):
        level_log_probs(model, index, levels, rows)


@torch.inference_mode()
def test_prefix_conditioned_forced_decoding_scores_each_distinct_parent_once_with_the_same_result() -> None:
    model, index, (q, st, mk) = _model(conditioned=True)
    rows = torch.tensor([17, 0, 1, 7, 8, 7, 16])
    assert torch.allclose(forced_log_probs(model, index, q, st, mk, rows),
                          _straightforward(model, index, q, st, mk, rows), atol=1e-5)
    with pytest.raises(InvalidInput, match="parent-conditioned"):
        query_levels(model, q, st, mk)


def test_host_rows_gather_on_the_host_and_widen_bf16_exactly() -> None:
    t, rows = torch.randn(7, 5), np.array([3, 0, 3])
    assert np.array_equal(host_rows(t, rows), t[rows].numpy())
    b = t.to(torch.bfloat16)
    assert np.array_equal(host_rows(b, rows), b.float()[rows].numpy())


def _rl(source: str, ids: Sequence[str], kind: str = "query") -> RankedList:
    return RankedList(source, [Hit(i, float(len(ids) - r), source) for r, i in enumerate(ids)], "q", 1.0, kind)


def test_score_features_value_gap_and_presence_flag() -> None:
    fb = FeatureBuilder([("bm25", "query")], score_names=("gen_logprob",))
    ids, X = fb.build([_rl("bm25", ["a", "b", "c"])], {"a": {"gen_logprob": -2.0}, "b": {"gen_logprob": -5.0}})
    rows = {i: dict(zip(fb.names, x.tolist())) for i, x in zip(ids, X)}
    assert rows["a"]["score__gen_logprob__value"] == -2.0 and rows["a"]["score__gen_logprob__gap"] == 0.0
    assert rows["b"]["score__gen_logprob__gap"] == -3.0 and rows["b"]["score__present"] == 1.0
    assert rows["c"]["score__present"] == 0.0 and rows["c"]["score__gen_logprob__value"] == 0.0  # missing: flagged
    assert FeatureBuilder([("bm25", "query")]).build([_rl("bm25", ["a"])], {"a": {"x": 1.0}})[1].shape == (1, 7)  # no score columns


def _examples(n: int, seed: int) -> tuple[dict[str, list[RankedList]], dict[str, dict], dict[str, dict]]:
    """BM25 ranks the relevant item anywhere; only the item score knows it (a model must use it)."""
    rng = random.Random(seed)
    lists, scores, qrels = {}, {}, {}
    for q in range(n):
        items = [f"s{seed}q{q}i{j}" for j in range(10)]
        rel = rng.choice(items)
        rng.shuffle(items)
        lists[f"q{q}"] = [_rl("bm25", items)]
        scores[f"q{q}"] = {i: {"gen_logprob": (-0.5 if i == rel else -3.0) + rng.random()} for i in items}
        qrels[f"q{q}"] = {rel: 4}
    return lists, scores, qrels


def test_learned_fusion_uses_item_scores_and_round_trips(tmp_path) -> None:
    lists, scores, qrels = _examples(80, 0)
    ex = [Example(lists[q], qrels[q], scores[q]) for q in lists]
    model, _ = LearnedFusion.train(ex[:60], ex[60:], score_names=("gen_logprob",),
                                   grid=[{"num_leaves": 4, "learning_rate": 0.2, "min_data_in_leaf": 5}])
    assert model.score_names == ("gen_logprob",)
    hits = [model.fuse(lists[q], 1, scores[q])[0].item_id for q in list(lists)[60:]]
    assert np.mean([h in qrels[q] for h, q in zip(hits, list(lists)[60:])]) >= 0.9
    again = LearnedFusion.load(model.save(tmp_path / "f.json"))
    assert again.score_names == ("gen_logprob",) and again.version() == model.version()


def test_fit_reports_the_ablation_and_ships_the_model_with_scores() -> None:
    lists, scores, qrels = _examples(60, 1)
    model, report = fit_learned_fusion(lists, qrels, scores=scores, depth=10)
    rows = report["ablation"]
    assert list(rows) == ["bm25 only", "+ forced-decoding score"]  # no generative list, no cosine, no intents here
    assert rows["+ forced-decoding score"]["nDCG@10"] > rows["bm25 only"]["nDCG@10"] + 0.2
    assert model.score_names == ("gen_logprob",) and report["learned"] == rows["+ forced-decoding score"]
    assert next(iter(report["feature_importance"])).startswith("score__gen_logprob")


class _Source(Retriever):
    def __init__(self, name: str, ids: Sequence[str], delay: float = 0.0, fail: bool = False) -> None:
        self.name, self.ids, self.delay, self.fail = name, list(ids), delay, fail
        self.score_names = ("gen_logprob",) if name == "generative" else ()
        self.scored: list[list[str]] = []

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        validate_queries(queries, k)
        return [[Hit(i, 1.0 / (r + 1), self.name) for r, i in enumerate(self.ids[:k])] for _ in queries]

    def score_items(self, query: str, item_ids: Sequence[str]) -> list[tuple[float, ...] | None]:
        self.scored.append(list(item_ids))
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("scorer down")
        return [(-1.0,) if i != "x" else None for i in item_ids]


class _Wants(LearnedFusion):
    """A fuser that asks for scores and records what it got (no LightGBM needed)."""

    def __init__(self) -> None:
        self.score_names, self.got = ("gen_logprob",), None

    def fuse(self, lists, k, item_scores=None):  # type: ignore[no-untyped-def]
        from tandem.fusion import RRF

        self.got = item_scores
        return RRF().fuse(lists, k)

    def version(self) -> str:
        return "wants"


@pytest.mark.parametrize("case", ["ok", "slow", "down"])
def test_searcher_fetches_item_scores_of_every_candidate_within_the_deadline(case: str) -> None:
    gen = _Source("generative", ["g1", "x"], delay=0.5 if case == "slow" else 0.0, fail=case == "down")
    fuser = _Wants()
    s = HybridSearcher([_Source("bm25", ["b1", "g1"]), gen], fuser=fuser, config=SearchConfig(deadline_s=0.25))
    result = s.search(SearchRequest(query="drill", top_k=5))
    assert gen.scored == [["b1", "g1", "x"]]  # one batched call over both sources' candidates
    if case == "ok":
        assert fuser.got == {"b1": {"gen_logprob": -1.0}, "g1": {"gen_logprob": -1.0}} and not result.degraded
    else:  # missing scores: the search still answers, degraded with the reason
        assert fuser.got == {} and result.degraded and "generative item scores" in result.degraded_reasons[0]
        assert {h.item_id for h in result.hits} == {"b1", "g1", "x"}
    s.close()


def test_rrf_searches_never_ask_for_item_scores() -> None:
    gen = _Source("generative", ["g1"])
    s = HybridSearcher([_Source("bm25", ["b1"]), gen])
    s.search(SearchRequest(query="drill", top_k=5))
    assert gen.scored == []
    s.close()
