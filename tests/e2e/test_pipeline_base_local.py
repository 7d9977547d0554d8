"""``tandem pipelines run base --local``: the whole base pipeline with kfp.local on a tiny catalog.

The run itself is the session fixture ``ci_base_pipeline`` (``tests/e2e/conftest.py``), which the
adapter pipeline's test continues from.

Every step runs as a subprocess of this environment (``SubprocessRunner(use_venv=False)``);
the run must end with the model, ID map, snapshot and the learned fusion fitted on the model
(the ``fusion`` artifact, whose parent is the model) in the registry and promoted together
(the first base has nothing to regress against, so only memorisation gates it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.catalog.queries import write_queries
from tandem_app.cli import app
from tandem.registry import ArtifactKind, Registry
from tandem_testing.ci_pipeline import FUSION_MAX_QUERIES, BaseRun, pipeline_args
from tandem_testing.synthetic_catalog import synthetic_catalog

pytestmark = pytest.mark.e2e

N_ITEMS = 120


def _write(data: Path) -> dict[str, str]:
    s = synthetic_catalog(N_ITEMS)
    data.mkdir()
    (data / "catalog.jsonl").write_text("".join(json.dumps(it.model_dump(exclude_none=True)) + "\n" for it in s.items))
    write_queries(s.train_queries, data / "train.tsv")
    write_queries(s.dev_queries, data / "dev.tsv")
    for name, qrels in (("train.qrels", s.train_qrels), ("dev.qrels", s.dev_qrels)):
        (data / name).write_text("".join(f"{q} 0 {i} {g}\n" for q, rel in qrels.items() for i, g in rel.items()))
    return {"snapshot_uri": str(data / "catalog.jsonl"), "train_queries_uri": str(data / "train.tsv"),
            "train_qrels_uri": str(data / "train.qrels"), "dev_queries_uri": str(data / "dev.tsv"),
            "dev_qrels_uri": str(data / "dev.qrels")}


def test_base_pipeline_runs_locally_and_promotes(ci_base_pipeline: BaseRun, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    params, out, runs = ci_base_pipeline.params, ci_base_pipeline.out, ci_base_pipeline.runs
    assert out["promoted"] is True

    reg = Registry(ci_base_pipeline.registry)
    assert reg.current(ArtifactKind.BASE_MODEL) == out["base-model"]
    assert reg.current(ArtifactKind.ID_MAP) == out["id-map"]
    manifest = reg.manifest(ArtifactKind.BASE_MODEL, out["base-model"])
    assert manifest.metrics["exact_match"] >= 0.9
    assert 0.0 < manifest.metrics["nDCG@10"] <= 1.0
    # What was promoted is a complete model folder (without the resume checkpoint) that serves.
    from tandem.generative import load_retriever

    art = reg.resolve_current(ArtifactKind.BASE_MODEL)
    assert art.local_path is not None and not (art.local_path / "checkpoint").exists()
    [hits] = load_retriever(str(art.local_path), device="cpu").retrieve(["cordless drill"], 5)
    assert hits and all(h.item_id for h in hits)
    reports = list(runs.glob("tandem-base-*/promotion-gate/report"))
    assert reports and "**PROMOTE**" in reports[0].read_text()
    # v2 (the default) needs no prepared pseudo-queries or BM25 run: the step writes none. The
    # curve page for the KFP UI shows the stages and the dev figures after each.
    [prepared] = runs.glob("tandem-base-*/prepare-training-data/training_data")
    assert not any(prepared.iterdir())
    [page] = runs.glob("tandem-base-*/train-generative/curve")
    text = page.read_text()
    assert "data:image/png;base64," in text and "memorise" in text and "encoder" in text

    # The learned fusion fitted on this model is published with it as parent and promoted with it,
    # and it is what `tandem serve --registry` takes for `--fusion auto`.
    from tandem.fusion.factory import make_fuser
    from tandem.fusion.learned import LearnedFusion
    from tandem.registry.fusion import INTENT_FILE, MODEL_FILE, REPORT_FILE
    from tandem.search.catalog import InMemoryCatalog

    assert reg.current(ArtifactKind.FUSION) == out["fusion"]
    fusion = reg.get(ArtifactKind.FUSION, out["fusion"])
    assert fusion.manifest.parents == [f"base-model:{out['base-model']}"]
    assert set(fusion.manifest.files) == {MODEL_FILE, REPORT_FILE, INTENT_FILE}
    assert 0.0 < fusion.manifest.metrics["nDCG@10"] <= 1
    report = json.loads((fusion.local_path / REPORT_FILE).read_text())
    # Fitted on the training queries the generative model never saw (its fusion holdout).
    from tandem.training.tree_run import read_fusion_holdout

    holdout = read_fusion_holdout(art.local_path)
    assert report["model_fusion_holdout"] == len(holdout) > 0 and report["queries"] == min(len(holdout), FUSION_MAX_QUERIES)
    assert "generative/query" in report["slots"]
    # Fitted over the intent decomposer's sub-query lists, with the decomposer shipped beside it.
    from tandem.intent.decomposer import CatalogIntentDecomposer

    assert report["intents"] == CatalogIntentDecomposer.load(fusion.local_path / INTENT_FILE).version()
    assert "+ generative list" in report["ablation"] and report["ablation"]["+ cosine"]["scores"] == [
        "gen_logprob", "gen_cosine"]
    [fusion_page] = runs.glob("tandem-base-*/train-fusion/report")
    assert "| bm25 only |" in fusion_page.read_text() and "Feature importance" in fusion_page.read_text()
    catalog = InMemoryCatalog.from_jsonl(params["snapshot_uri"])
    fuser = make_fuser("auto", None, catalog, registry=str(ci_base_pipeline.registry))
    assert isinstance(fuser, LearnedFusion) and fuser.version() == report["version"]
    from tandem.search.build import SearcherSpec, spec_intents

    served = spec_intents(SearcherSpec(sources=[], registry=str(ci_base_pipeline.registry)))
    assert served is not None and served.version() == report["intents"]


def test_bad_snapshot_uri_fails_at_the_first_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    params = {**_write(tmp_path / "data"), "snapshot_uri": str(tmp_path / "missing.jsonl")}
    result = CliRunner().invoke(app, pipeline_args("base", params, tmp_path / "runs"))
    assert result.exit_code == 2
    assert "Inner task failed: 'snapshot-catalog'" in " ".join(result.output.split())
    assert not list((tmp_path / "runs").glob("tandem-base-*/build-semantic-ids"))  # nothing ran after it
