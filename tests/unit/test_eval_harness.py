"""Evaluation harness: metrics by hand on a tiny judged set, run files, significance, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.catalog import read_qrels
from tandem_app.cli import app
from tandem.errors import InvalidInput
from tandem.eval import (
    default_measures,
    evaluate,
    paired_significance,
    read_trec_run,
    run_retriever,
    write_trec_run,
)
from tandem.retriever import Hit, Retriever, validate_queries

DATA = Path(__file__).resolve().parents[1] / "data" / "catalog"


@pytest.fixture
def qrels() -> dict[str, dict[str, int]]:
    return read_qrels(DATA / "qrels.txt")


def test_default_measure_names() -> None:
    assert default_measures(4) == [
        "nDCG@10", "R(rel=4)@10", "R(rel=4)@100", "RR(rel=4)@10", "AP(rel=4)", "P(rel=4)@30", "AP", "P@30",
    ]  # fmt: skip
    assert default_measures(1) == ["nDCG@10", "R@10", "R@100", "RR@10", "AP", "P@30"]
    with pytest.raises(InvalidInput, match="`rel`"):
        default_measures(0)


def test_metrics_match_hand_computed_values(qrels: dict[str, dict[str, int]]) -> None:
    a = evaluate(read_trec_run(DATA / "run_a.txt"), qrels)
    # q1 (d1,d2 relevant, both first) R=1 RR=1; q2 R=1 RR=1; q3 f1 at rank 2: R=1 RR=.5; q4 none.
    assert a.queries == 4
    assert a.metrics["R(rel=4)@10"] == pytest.approx(0.75)
    assert a.metrics["RR(rel=4)@10"] == pytest.approx(0.625)
    assert a.per_query["q3"]["RR(rel=4)@10"] == pytest.approx(0.5)
    b = evaluate(read_trec_run(DATA / "run_b.txt"), qrels)
    # Tied scores in a run file are ordered like trec_eval: docid descending, so p2 first.
    assert b.per_query["q4"]["RR(rel=4)@10"] == 1.0
    assert b.metrics["RR(rel=4)@10"] == pytest.approx((0.5 + 0 + 0 + 1) / 4)


def test_unanswered_judged_query_counts_as_zero(qrels: dict[str, dict[str, int]]) -> None:
    run = read_trec_run(DATA / "run_a.txt")
    del run["q1"]
    res = evaluate(run, qrels)
    assert res.queries == 4 and res.per_query["q1"]["nDCG@10"] == 0.0
    assert res.metrics["R(rel=4)@10"] == pytest.approx(0.5)


def test_query_subset_and_unjudged_queries(qrels: dict[str, dict[str, int]]) -> None:
    res = evaluate(read_trec_run(DATA / "run_a.txt"), qrels, queries=["q1", "q2", "zz"])
    assert res.queries == 2 and res.unjudged_queries == ["zz"]
    with pytest.raises(InvalidInput, match="judge none"):
        evaluate({}, qrels, queries=["zz"])


def test_system_order_is_kept_even_with_tied_scores(qrels: dict[str, dict[str, int]]) -> None:
    # Equal scores: the evaluator must use the system's order, not re-sort by docid.
    res = evaluate({"q4": [("p1", 1.0), ("p2", 1.0)]}, qrels, queries=["q4"])
    assert res.metrics["RR(rel=4)@10"] == 0.5


def test_trec_run_round_trip_keeps_order_of_ties(tmp_path: Path) -> None:
    run = {"q1": [("b", 2.0), ("a", 2.0), ("c", 1.0)]}
    write_trec_run(run, tmp_path / "r.txt")
    assert [d for d, _ in read_trec_run(tmp_path / "r.txt")["q1"]] == ["b", "a", "c"]
    bad = tmp_path / "bad.txt"
    bad.write_text("q1 Q0 d1 1\n")
    with pytest.raises(InvalidInput, match=r"bad.txt:1"):
        read_trec_run(bad)


def test_significance_detects_a_real_difference_and_not_a_null_one() -> None:
    qrels = {f"q{i}": {"good": 4} for i in range(30)}
    good = evaluate({q: [("good", 1.0)] for q in qrels}, qrels, ["RR(rel=4)@10"])
    bad = evaluate({q: [("x", 2.0), ("good", 1.0)] if i % 3 else [("good", 1.0)] for i, q in enumerate(qrels)},
                   qrels, ["RR(rel=4)@10"])  # fmt: skip
    [sig] = paired_significance(good, bad, trials=2000)
    assert sig.delta < 0 and sig.randomisation_p_value < 0.01 and sig.t_p_value < 0.01
    [same] = paired_significance(good, good, trials=2000)
    assert same.randomisation_p_value == 1.0 and same.delta == 0


class _Echo(Retriever):
    name = "echo"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def retrieve(self, queries, k):  # type: ignore[no-untyped-def]
        validate_queries(queries, k)
        self.batches.append(len(queries))
        return [[Hit(q.split()[0], 1.0, self.name)] for q in queries]


def test_run_retriever_batches_and_reports_progress() -> None:
    r = _Echo()
    done: list[int] = []
    run = run_retriever(r, {f"q{i}": f"d{i} x" for i in range(5)}, k=3, batch_size=2, progress=done.append)
    assert r.batches == [2, 2, 1] and sum(done) == 5
    assert run["q4"] == [("d4", 1.0)]


def test_cli_evaluates_run_files_and_writes_all_outputs(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        ["eval", "--run", str(DATA / "run_a.txt"), "--run", str(DATA / "run_b.txt"),
         "--queries", str(DATA / "queries.tsv"), "--qrels", str(DATA / "qrels.txt"), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["system"] == "run_a" and report["queries"] == 4
    assert report["metrics"]["RR(rel=4)@10"] == pytest.approx(0.625)
    assert set(report["systems"]) == {"run_a", "run_b"}
    assert report["significance"]["run_a vs run_b"][0]["measure"] == "nDCG@10"
    rows = list(csv.DictReader(open(tmp_path / "report.per_query.csv")))
    assert len(rows) == 8 and {"system", "qid", "nDCG@10"} <= set(rows[0])
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_rejects_unknown_system_and_missing_inputs(tmp_path: Path) -> None:
    args = ["--queries", str(DATA / "queries.tsv"), "--qrels", str(DATA / "qrels.txt"), "--out", str(tmp_path / "r.json")]
    result = CliRunner().invoke(app, ["eval", "--system", "nope", *args])
    assert result.exit_code == 2 and "`system`" in result.output
    result = CliRunner().invoke(app, ["eval", *args])
    assert result.exit_code == 2 and "--system" in result.output
