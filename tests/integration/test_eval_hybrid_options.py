"""``--system hybrid`` options: intents, fusion and sources chosen as the gateway chooses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.catalog import load_items
from tandem.errors import InvalidInput
from tandem.eval.systems import SystemSpec, build_system
from tandem.fusion import RRF, ScoreFusion
from tandem.intent import CatalogIntentDecomposer

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "data" / "catalog" / "products.jsonl"


@pytest.fixture(scope="module")
def intent_model(java_home: object, tmp_path_factory: pytest.TempPathFactory) -> Path:
    items = load_items(CATALOG).items
    decomposer = CatalogIntentDecomposer.fit([i.title for i in items], [i.price for i in items], min_count=1)
    return decomposer.save(tmp_path_factory.mktemp("intents") / "model")


def _spec(tmp_path: Path, **options: object) -> SystemSpec:
    return SystemSpec(catalog=CATALOG, options=dict(options), home=tmp_path)


def test_bm25_only_hybrid_with_intents_defaults_to_minmax(intent_model: Path, tmp_path: Path) -> None:
    system = build_system("hybrid", _spec(tmp_path, sources="bm25", intent_model=str(intent_model)))
    try:
        assert isinstance(system.searcher.fuser, ScoreFusion)
        assert system.searcher.intents.version() != "whole-query"
        hits = system.retrieve(["cordless drill"], 5)[0]
        assert hits and all(h.source == "hybrid" for h in hits)
    finally:
        system.close()


def test_explicit_fusion_and_bm25_options_pass_through(tmp_path: Path) -> None:
    system = build_system("hybrid", _spec(tmp_path, sources="bm25", fusion="rrf", k1=0.9, b=0.4))
    try:
        assert isinstance(system.searcher.fuser, RRF)
        assert system.retrieve(["garden hose"], 3)[0]
    finally:
        system.close()


def test_generative_only_options_do_not_reach_bm25(tmp_path: Path) -> None:
    """``--adapter`` is for the generative source; bm25 (alone or in a hybrid) ignores it."""
    for name, options in (("bm25", {"adapter": "/some/adapter"}),
                          ("hybrid", {"sources": "bm25", "adapter": "/some/adapter", "num_beams": 50})):
        system = build_system(name, _spec(tmp_path, **options))
        try:
            assert system.retrieve(["garden hose"], 3)[0]
        finally:
            system.close()


@pytest.mark.parametrize(("options", "field"), [
    ({"sources": "bm25", "fusion": "borda"}, "`fusion`"),
    ({"sources": "bm25", "fusion": "learned"}, "fusion model"),
    ({"sources": "bm25", "fusion": "learned", "fusion_model": "/nonexistent.json"}, "`fusion_model`"),
    ({"sources": "bm25,dense"}, "`sources`"),
])
def test_bad_hybrid_options_name_the_option(options: dict, field: str, tmp_path: Path, java_home: object) -> None:
    with pytest.raises(InvalidInput, match=field):
        build_system("hybrid", _spec(tmp_path, **options))


def test_cli_compares_bm25_with_an_intent_hybrid(intent_model: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tandem_app.cli import app

    data = CATALOG.parent
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, [
        "eval", "--system", "bm25", "--system", "hybrid", "--sources", "bm25", "--intent-model", str(intent_model),
        "--fusion", "minmax", "--catalog", str(CATALOG), "--queries", str(data / "queries.tsv"),
        "--qrels", str(data / "qrels.txt"), "--out", str(out), "--k", "10"])
    assert result.exit_code == 0, result.output
    import json

    systems = json.loads(out.read_text())["systems"]
    assert set(systems) == {"bm25", "hybrid"}
    assert 0.0 < systems["hybrid"]["metrics"]["nDCG@10"] <= 1.0
