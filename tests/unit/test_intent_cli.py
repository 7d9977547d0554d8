"""``tandem intent fit`` and ``tandem intent parse`` end to end on a small invented catalog."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tandem_app.cli import app


def test_fit_then_parse(tmp_path) -> None:
    catalog = tmp_path / "items.jsonl"
    rows = [{"item_id": f"i{n}", "title": f"{b} {t} in {f}", "price": 10.0 + n}
            for n, (b, t, f) in enumerate((b, t, f) for b in ("Delta", "Moen", "Everbilt")
                                          for t in ("Kitchen Faucet", "Shower Head", "Door Hinge")
                                          for f in ("Chrome", "Brushed Nickel", "White"))]
    catalog.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    runner = CliRunner()
    out = tmp_path / "model"
    res = runner.invoke(app, ["intent", "fit", "--catalog", str(catalog), "--out", str(out), "--min-count", "2"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["items"] == len(rows) and summary["vocabulary"]["brand"] >= 3
    assert (out / "intent.json").is_file()

    res = runner.invoke(app, ["intent", "parse", "Moen shower head under 30 dollars", "--model", str(out)])
    assert res.exit_code == 0, res.output
    parsed = json.loads(res.output)
    assert parsed["price"] == {"min": None, "max": 30.0, "relative": False}
    assert {"label": "brand", "text": "moen", "start": 0, "end": 4} in parsed["spans"]
    assert parsed["intents"][-1] == {"text": "price<=30", "kind": "filter", "weight": 0.0,
                                     "filter": {"min_price": None, "max_price": 30.0}}

    res = runner.invoke(app, ["intent", "parse", "x", "--model", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "`path`" in res.output


def test_serve_fusion_auto_follows_the_measured_best(tmp_path) -> None:
    import typer

    from tandem_app.cli.serve import _searcher
    from tandem.fusion import RRF, ScoreFusion
    from tandem.intent.base import WholeQuery
    from tandem_testing.term_overlap import TermOverlapRetriever
    from tandem_testing.tiny_catalog import tiny_catalog

    def fuser(fusion: str, fusion_model=None, intents=None):
        searcher = _searcher([TermOverlapRetriever(tiny_catalog(), name="bm25")], None, None, 1000.0, intents,
                             fusion, fusion_model)
        searcher.close()
        return searcher.fuser

    assert isinstance(fuser("auto"), RRF)  # BM25 alone: RRF is BM25's order
    with_intents = fuser("auto", intents=WholeQuery())
    assert isinstance(with_intents, ScoreFusion) and with_intents.method == "minmax"
    assert fuser("zscore").method == "zscore"
    for bad in (("learned", None), ("borda", None)):
        try:
            fuser(*bad)
        except typer.BadParameter:
            continue
        raise AssertionError(f"{bad} accepted")
