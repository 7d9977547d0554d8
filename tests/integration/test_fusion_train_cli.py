"""``tandem fusion train``: lists recorded from the real hybrid searcher, LambdaMART fitted and served."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.catalog.queries import write_queries
from tandem_app.cli import app
from tandem.errors import InvalidInput
from tandem.eval.systems import SystemSpec, build_system
from tandem.fusion.fit import ListRecorder, split_queries
from tandem.fusion.learned import LearnedFusion
from tandem.fusion.rrf import RRF
from tandem_testing.synthetic_catalog import synthetic_catalog

pytestmark = pytest.mark.integration


def _write(tmp: Path) -> tuple[Path, Path, Path]:
    s = synthetic_catalog(150)
    catalog, queries, qrels = tmp / "catalog.jsonl", tmp / "queries.tsv", tmp / "qrels.txt"
    catalog.write_text("".join(json.dumps(it.model_dump(exclude_none=True)) + "\n" for it in s.items))
    write_queries(s.train_queries, queries)
    qrels.write_text("".join(f"{q} 0 {i} {g}\n" for q, rel in s.train_qrels.items() for i, g in rel.items()))
    return catalog, queries, qrels


def test_train_writes_a_model_the_gateway_rule_picks(tmp_path: Path, java_home: object,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    catalog, queries, qrels = _write(tmp_path)
    out = tmp_path / "fusion.json"
    res = CliRunner().invoke(app, ["fusion", "train", "--catalog", str(catalog), "--queries", str(queries),
                                   "--qrels", str(qrels), "--out", str(out), "--max-queries", "120"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["queries"] == 120 and report["train_queries"] + report["selection_queries"] == 120
    assert report["slots"] == ["bm25/query"]
    for name in ("learned", "rrf", "bm25 (whole query)"):
        assert 0.0 <= report[name]["nDCG@10"] <= 1.0
    assert json.loads(out.read_text())["format"] == "tandem.fusion.learned/1"
    # `auto` with the model is learned fusion, in eval as in serve.
    system = build_system("hybrid", SystemSpec(catalog=catalog, home=tmp_path / "home",
                                               options={"sources": "bm25", "fusion_model": str(out)}))
    try:
        assert isinstance(system.searcher.fuser, LearnedFusion)
        assert system.retrieve(["cordless drill"], 5)[0]
    finally:
        system.close()


def test_train_refuses_qrels_without_matching_queries(tmp_path: Path) -> None:
    catalog, queries, _ = _write(tmp_path)
    qrels = tmp_path / "other.txt"
    qrels.write_text("zz 0 x 4\n")
    res = CliRunner().invoke(app, ["fusion", "train", "--catalog", str(catalog), "--queries", str(queries),
                                   "--qrels", str(qrels), "--out", str(tmp_path / "f.json")])
    assert res.exit_code == 2 and "--qrels" in res.output


def test_generative_depth_without_a_model_is_refused(tmp_path: Path) -> None:
    catalog, queries, qrels = _write(tmp_path)
    res = CliRunner().invoke(app, ["fusion", "train", "--catalog", str(catalog), "--queries", str(queries),
                                   "--qrels", str(qrels), "--out", str(tmp_path / "f.json"),
                                   "--generative-depth", "50"])
    assert res.exit_code == 2 and "--generative-depth" in res.output and "needs --model" in res.output


def test_recorder_keeps_the_last_lists_and_delegates() -> None:
    from tandem.fusion.base import RankedList
    from tandem.retriever import Hit

    rec = ListRecorder(RRF(), ("gen_logprob",))
    lists = [RankedList("bm25", [Hit("a", 2.0, "bm25"), Hit("b", 1.0, "bm25")], "q", 1.0, "query")]
    assert rec.score_names == ("gen_logprob",)  # the searcher fetches these for every candidate
    assert [h.item_id for h in rec.fuse(lists, 1, {"b": {"gen_logprob": -1.0}})] == ["a"]
    assert rec.take() == (lists, {"b": {"gen_logprob": -1.0}})
    with pytest.raises(RuntimeError):
        rec.take()


def test_split_is_seeded_and_disjoint() -> None:
    ids = [f"q{i}" for i in range(50)]
    train, sel = split_queries(ids, 0.2, 7)
    assert len(sel) == 10 and not set(train) & set(sel) and sorted(train + sel) == sorted(ids)
    assert split_queries(ids, 0.2, 7) == (train, sel)
    with pytest.raises(InvalidInput, match="selection_share"):
        split_queries(ids, 1.0, 7)
