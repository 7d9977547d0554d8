"""``tandem train generative --profile ci`` (v2: pretrained encoder + ID tree) end to end, then
``tandem eval --system generative``; and a golden dev figure on a fixed Home Depot sample.

The Home Depot sample is the demo's (the judged items of the first 40 dev and 80 train
queries, sorted ids, fresh items left out): the same on every machine. Its golden nDCG@10
guards the quality of the whole v2 path (encoder, IDs, decoder, training) from regressions;
the tolerance absorbs thread-count and CPU-kernel differences.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.catalog.queries import write_queries
from tandem_app.cli import app
from tandem_testing.synthetic_catalog import synthetic_catalog

pytestmark = pytest.mark.e2e

N_ITEMS = 300
#: Measured with seed 13 on the 2-core build machine (the demo's BM25 scores 0.575 nDCG@10 on
#: the Home Depot sample; the v1 T5 scored 0.137; the v2 retriever 0.5745 before pseudo-relevance
#: feedback became its default, 0.5926 with it, 0.6404 since stage 1 adapts the encoder).
GOLDEN_SYNTHETIC_R10 = 1.0
GOLDEN_HD_NDCG10 = 0.6404
TOLERANCE = 0.04


def _train(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["train", "generative", "--profile", "ci", "--seed", "13", "--device", "cpu",
                                      "--no-progress", *args])
    assert result.exit_code == 0, result.output
    assert "memorise" in result.output and "encoder" in result.output and "dev nDCG@10" in result.output


def test_ci_profile_memorises_retrieves_and_evaluates(tmp_path: Path) -> None:
    from tandem.eval import evaluate, run_retriever
    from tandem.generative import load_retriever

    s = synthetic_catalog(N_ITEMS)
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(it.model_dump(exclude_none=True)) + "\n" for it in s.items))
    queries, qrels = tmp_path / "q.tsv", tmp_path / "qrels.txt"
    write_queries(s.train_queries, queries)
    qrels.write_text("".join(f"{q} 0 {i} {g}\n" for q, rel in s.train_qrels.items() for i, g in rel.items()))
    dq, dr = tmp_path / "dq.tsv", tmp_path / "dr.txt"
    write_queries(s.dev_queries, dq)
    dr.write_text("".join(f"{q} 0 {i} {g}\n" for q, rel in s.dev_qrels.items() for i, g in rel.items()))
    out = tmp_path / "model"
    _train(["--catalog", str(catalog), "--train-queries", str(queries), "--train-qrels", str(qrels), "--out",
            str(out), "--dev-queries", str(dq), "--dev-qrels", str(dr), "--set", "threads=1"])
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["final_memorisation"]["exact_match"] >= 0.9
    assert set(summary["stages"]) == {"init", "memorise", "align", "encoder"}

    r10 = evaluate(run_retriever(load_retriever(out, num_beams=10), s.dev_queries, k=10), s.dev_qrels,
                   ["R(rel=4)@10"]).metrics["R(rel=4)@10"]
    assert r10 == pytest.approx(GOLDEN_SYNTHETIC_R10, abs=TOLERANCE)

    report = tmp_path / "eval.json"
    res = CliRunner().invoke(app, ["eval", "--system", "generative", "--model", str(out), "--queries", str(dq),
                                   "--qrels", str(dr), "--out", str(report)])
    assert res.exit_code == 0, res.output
    assert "generative" in report.read_text()

    bad = CliRunner().invoke(app, ["train", "generative", "--catalog", str(catalog), "--train-queries", str(queries),
                                   "--train-qrels", str(qrels), "--out", str(tmp_path / "x"),
                                   "--encoder", str(tmp_path)])
    assert bad.exit_code == 2 and "no config.json" in bad.output


def test_golden_dev_figure_on_a_home_depot_sample(tmp_path: Path) -> None:
    from tandem.catalog.datasets import data_root
    from tandem.eval import evaluate, run_retriever
    from tandem.generative import load_retriever
    from tandem_app.demo import DemoConfig, _sample

    sample = _sample(data_root("homedepot"), tmp_path / "sample", DemoConfig())
    out = tmp_path / "model"
    _train(["--catalog", str(sample.base), "--train-queries", str(sample.train_queries), "--train-qrels",
            str(sample.train_qrels), "--out", str(out), "--dev-queries", str(sample.dev_queries_file),
            "--dev-qrels", str(sample.dev_qrels_file)])
    retriever = load_retriever(out, num_beams=100)
    ndcg = evaluate(run_retriever(retriever, sample.dev_queries, k=100), sample.dev_qrels,
                    ["nDCG@10"]).metrics["nDCG@10"]
    print(f"Home Depot sample: {sample.n_base} items, {len(sample.dev_queries)} dev queries, nDCG@10 {ndcg:.4f}")
    assert ndcg == pytest.approx(GOLDEN_HD_NDCG10, abs=TOLERANCE)
