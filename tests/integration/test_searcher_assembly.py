"""One searcher assembly (``tandem.search.build.build_searcher``): ``tandem search``, ``tandem eval
--system hybrid`` and the gateway rank alike for the same query and models.

Before, ``tandem search`` ignored the intent model the gateway used and so ranked differently
from what was served; here all three run BM25 + a (micro, untrained) generative model + a
fitted intent decomposer over the test catalog, and must return the same items in the same
order with the same fused scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tandem.catalog import load_items
from tandem.eval.systems import SystemSpec, bm25_index_for, build_system
from tandem.intent.decomposer import CatalogIntentDecomposer

pytestmark = pytest.mark.integration

CATALOG = Path(__file__).resolve().parents[1] / "data" / "catalog" / "products.jsonl"
QUERIES = ("cordless drill", "garden hose under $30")
K = 5


@pytest.fixture(scope="module")
def artifacts(java_home: object, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A BM25 index, a micro generative model folder and an intent model over the test catalog."""
    from tandem_testing.model_fixtures import untrained_model_dir

    root = tmp_path_factory.mktemp("assembly")
    items = load_items(CATALOG).items
    intents = CatalogIntentDecomposer.fit([i.title for i in items], [i.price for i in items], min_count=1)
    return {"home": root, "index": bm25_index_for(SystemSpec(catalog=CATALOG, home=root)),
            "model": untrained_model_dir(root / "model", items), "intents": intents.save(root / "intents")}


def _eval_rankings(a: dict[str, Path]) -> dict[str, list[tuple[str, float]]]:
    system = build_system("hybrid", SystemSpec(catalog=CATALOG, model=a["model"], home=a["home"],
                                               options={"intent_model": str(a["intents"])}))
    try:
        assert system.searcher.intents.version() != "whole-query"
        return {q: [(h.item_id, h.score) for h in system.retrieve([q], K)[0]] for q in QUERIES}
    finally:
        system.close()


def _cli_rankings(a: dict[str, Path]) -> dict[str, list[tuple[str, float]]]:
    from typer.testing import CliRunner

    from tandem_app.cli import app

    out = {}
    for q in QUERIES:
        res = CliRunner().invoke(app, ["search", q, "-k", str(K), "--index", str(a["index"]), "--source", "hybrid",
                                       "--model", str(a["model"]), "--intent-model", str(a["intents"]),
                                       "--timeout-ms", "60000", "--json"])
        assert res.exit_code == 0, res.output
        body = json.loads(res.stdout)
        assert not body["degraded_reasons"]
        out[q] = [(h["item_id"], h["score"]) for h in body["hits"]]
    return out


def _gateway_rankings(a: dict[str, Path]) -> dict[str, list[tuple[str, float]]]:
    """What ``tandem serve --all-in-one --index --model --intent-model`` serves, over gRPC."""
    from tandem_app.cli.serve import _generative, _intents, _searcher
    from tandem_services.app import all_in_one_server, load_sparse
    from tandem_services.client import SearchClient
    from tandem_services.runner import BackgroundServer

    sources = [load_sparse(str(a["index"])), _generative(a["model"], None, [])]
    searcher = _searcher(sources, None, None, 60000.0, _intents(a["intents"]), "auto", None, model=a["model"])
    out = {}
    with BackgroundServer(lambda: all_in_one_server(searcher)) as server, \
            SearchClient(server.address, timeout_s=60) as client:
        for q in QUERIES:
            r = client.search(q, top_k=K)
            assert not r.degraded, list(r.degraded_reasons)
            out[q] = [(h.item_id, h.score) for h in r.hits]
    return out


def test_cli_eval_and_gateway_rank_alike(artifacts: dict[str, Path]) -> None:
    evaluated, searched, served = _eval_rankings(artifacts), _cli_rankings(artifacts), _gateway_rankings(artifacts)
    for q in QUERIES:
        assert evaluated[q], q
        ids = [i for i, _ in evaluated[q]]
        assert [i for i, _ in searched[q]] == ids, q
        assert [i for i, _ in served[q]] == ids, q
        for (_, a), (_, b), (_, c) in zip(evaluated[q], searched[q], served[q], strict=True):
            assert a == pytest.approx(b, rel=1e-6) and a == pytest.approx(c, rel=1e-5), q
    # Both sources took part (provenance is checked by the gateway's own tests).
    assert len({i for q in QUERIES for i, _ in evaluated[q]}) > 1
