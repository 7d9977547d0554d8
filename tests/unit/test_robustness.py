"""Robustness suites: deterministic perturbations, RobustScore, and ``tandem eval --robustness``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tandem.errors import InvalidInput
from tandem.eval import register_system, run_retriever
from tandem.eval.robustness import (
    KEYBOARD,
    SUITES,
    cooccurrence_synonyms,
    evaluate_robustness,
    perturb_queries,
    robust_scores,
    typo,
    word_query,
)
from tandem.retriever import Hit, Retriever

QUERIES = {"q1": "cordless drill", "q2": "garden hose", "q3": "large gray faucet", "q4": "hammer",
           "q5": "white interior paint"}
QRELS = {"q1": {"d1": 6}, "q2": {"d2": 6}, "q3": {"d3": 6}, "q4": {"d4": 6}, "q5": {"d5": 6}}


class ExactRetriever(Retriever):
    """Finds an item only when the query text is exactly one it knows: maximally brittle."""

    name = "exact"

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        table = {text: f"d{qid[1:]}" for qid, text in QUERIES.items()}
        return [[Hit(table[q], 1.0, self.name)] if q in table else [] for q in queries]


class BagRetriever(Retriever):
    """Word-overlap retrieval that ignores order: immune to reordering, hurt by typos."""

    name = "bag"

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        out = []
        for q in queries:
            words = set(q.lower().split())
            scored = [(len(words & set(t.split())), f"d{qid[1:]}") for qid, t in QUERIES.items()]
            out.append([Hit(i, float(s), self.name) for s, i in sorted(scored, reverse=True) if s][:k])
        return out


def test_suites_are_deterministic_by_seed_and_change_every_query() -> None:
    for suite in SUITES:
        a, b = perturb_queries(QUERIES, suite, seed=1), perturb_queries(QUERIES, suite, seed=1)
        assert a == b and a.keys() == QUERIES.keys()
        assert all(a[q] != QUERIES[q] and a[q].strip() for q in QUERIES), (suite, a)
        others = [perturb_queries(QUERIES, suite, seed=s) for s in range(2, 8)]
        assert any(o != a for o in others)
    # A query's perturbation does not depend on the other queries of the set.
    alone = perturb_queries({"q3": QUERIES["q3"]}, "typo", seed=1)
    assert alone["q3"] == perturb_queries(QUERIES, "typo", seed=1)["q3"]


def test_typo_is_one_character_edit() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        w = "faucet"
        t = typo(w, rng)
        assert t != w
        assert abs(len(t) - len(w)) <= 1
        if len(t) == len(w):
            diff = [i for i in range(len(w)) if t[i] != w[i]]
            assert len(diff) in (1, 2)  # a substitution, or an adjacent swap
            if len(diff) == 1:
                assert t[diff[0]] in KEYBOARD[w[diff[0]]]
    assert "s" in KEYBOARD["a"] and "q" in KEYBOARD["a"] and "p" not in KEYBOARD["a"]


def test_word_suite_uses_synonyms_then_drops() -> None:
    rng = np.random.default_rng(0)
    assert word_query("large gray faucet", rng) in {"big gray faucet", "large grey faucet", "large gray tap"}
    dropped = word_query("cordless xyz", np.random.default_rng(0), synonyms={})
    assert dropped in {"cordless", "xyz"}


def test_unknown_suite_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="`suite`"):
        perturb_queries(QUERIES, "emoji")


def test_robust_score_is_perturbed_over_clean() -> None:
    assert robust_scores({"R@10": 0.5, "nDCG@10": 0.0}, {"R@10": 0.25, "nDCG@10": 0.0}) == {
        "R@10": 0.5, "nDCG@10": None}


def test_brittle_system_scores_low_and_order_free_system_survives_reordering() -> None:
    measures = ["R(rel=4)@10"]
    exact = ExactRetriever()
    res = evaluate_robustness(lambda q: run_retriever(exact, q, k=10), QUERIES, QRELS, measures)
    assert res["clean"]["R(rel=4)@10"] == 1.0
    for suite in SUITES:
        assert res["suites"][suite]["robust_score"]["R(rel=4)@10"] == 0.0  # every query changed
        assert res["suites"][suite]["changed"] == 1.0
    bag = BagRetriever()
    res = evaluate_robustness(lambda q: run_retriever(bag, q, k=10), QUERIES, QRELS, measures, ["sentence"])
    assert res["suites"]["sentence"]["robust_score"]["R(rel=4)@10"] == 1.0  # reorder/paraphrase keep words


def test_cooccurrence_synonyms_pair_interchangeable_words() -> None:
    texts = [f"{c} {m} {t}" for c in ("red", "blue") for m in ("steel", "oak") for t in ("hammer", "drill", "saw")]
    subs = cooccurrence_synonyms(texts, min_similarity=0.5)
    assert subs["red"][0] == "blue" and subs["steel"][0] == "oak"
    assert "hammer" not in subs.get("red", [])  # co-occurring words are not substitutes


def test_cli_eval_robustness(tmp_path: Path) -> None:
    from tandem_app.cli import app

    register_system("exact-test", lambda spec: ExactRetriever())
    register_system("bag-test", lambda spec: BagRetriever())
    queries, qrels = tmp_path / "q.tsv", tmp_path / "qrels.txt"
    queries.write_text("".join(f"{q}\t{t}\n" for q, t in QUERIES.items()))
    qrels.write_text("".join(f"{q} 0 {d} {g}\n" for q, r in QRELS.items() for d, g in r.items()))
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["eval", "--out", str(out), "--queries", str(queries), "--qrels", str(qrels),
                                      "--system", "exact-test", "--system", "bag-test", "--robustness",
                                      "--measure", "R(rel=4)@10", "--suite", "typo", "--suite", "sentence",
                                      "--k", "10", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "RobustScore" in result.output
    report = json.loads(out.read_text())
    rob = report["robustness"]
    assert rob["seed"] == 3 and rob["suites"] == ["typo", "sentence"]
    assert rob["systems"]["exact-test"]["suites"]["typo"]["robust_score"]["R(rel=4)@10"] == 0.0
    assert rob["systems"]["bag-test"]["suites"]["sentence"]["robust_score"]["R(rel=4)@10"] == 1.0
    bad = CliRunner().invoke(app, ["eval", "--out", str(out), "--queries", str(queries), "--qrels", str(qrels),
                                   "--system", "exact-test", "--robustness", "--suite", "emoji"])
    assert bad.exit_code == 2 and "`--suite`" in bad.output
