"""Base then adapter pipeline with kfp.local on the ``ci`` profile, then serving what they promoted.

The base pipeline trains on the synthetic catalog minus its fresh items; the adapter
pipeline finds the items the current base lacks, trains and gates an adapter and promotes
it; a gRPC all-in-one server started on the registry then serves base + adapter (the
versions it reports are the promoted ones), and the registry holds both with their metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.catalog.datasets import is_fresh
from tandem.catalog.queries import write_queries
from tandem_app.cli import app
from tandem.registry import ArtifactKind, Registry
from tandem_testing.synthetic_catalog import synthetic_catalog

pytestmark = pytest.mark.e2e

N_ITEMS = 300


def _jsonl(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(it.model_dump(exclude_none=True)) + "\n" for it in items))
    return path


def _run(pipeline: str, params: dict[str, object], root: Path) -> dict:
    args = ["pipelines", "run", pipeline, "--local", "--root", str(root)]
    for k, v in params.items():
        args += ["--param", f"{k}={v}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.output[result.output.rindex("\n{\n") + 1:])


def test_base_then_adapter_pipeline_then_serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # shared CI cores: spinning OpenMP peers slow training down
    data = synthetic_catalog(N_ITEMS)
    fresh = [it for it in data.items if is_fresh(it.item_id)]
    assert fresh
    base_catalog = _jsonl(tmp_path / "base.jsonl", [it for it in data.items if not is_fresh(it.item_id)])
    catalog = _jsonl(tmp_path / "catalog.jsonl", data.items)
    write_queries(data.train_queries, tmp_path / "train.tsv")
    write_queries(data.dev_queries, tmp_path / "dev.tsv")
    for name, qrels in (("train.qrels", data.train_qrels), ("dev.qrels", data.dev_qrels)):
        (tmp_path / name).write_text("".join(f"{q} 0 {i} {g}\n" for q, rel in qrels.items() for i, g in rel.items()))
    registry = str(tmp_path / "registry")

    base = _run("base", {"snapshot_uri": base_catalog, "train_queries_uri": tmp_path / "train.tsv",
                         "train_qrels_uri": tmp_path / "train.qrels", "dev_queries_uri": tmp_path / "dev.tsv",
                         "dev_qrels_uri": tmp_path / "dev.qrels", "registry_uri": registry, "profile": "ci"},
                tmp_path / "runs")
    assert base["promoted"] is True
    adapter = _run("adapter", {"catalog_uri": catalog, "registry_uri": registry, "min_new_recall": 0.3,
                               "max_forgetting": 0.1}, tmp_path / "runs")
    assert adapter["promoted"] is True and adapter["base"] == f"base-model:{base['base-model']}"

    reg = Registry(registry)
    assert reg.current(ArtifactKind.BASE_MODEL) == base["base-model"]
    assert reg.current(ArtifactKind.ADAPTER) == adapter["adapter"]
    metrics = reg.manifest(ArtifactKind.ADAPTER, adapter["adapter"]).metrics
    assert metrics["new_r10"] >= 0.3 and metrics["new_r10_before"] == 0.0 and metrics["forgetting"] <= 0.1
    assert reg.manifest(ArtifactKind.BASE_MODEL, base["base-model"]).metrics["exact_match"] >= 0.9
    reports = list((tmp_path / "runs").glob("tandem-adapter-*/adapter-gate/report"))
    assert reports and "**PROMOTE**" in reports[0].read_text()

    # An hour with nothing new: the run stops after the first step and registers nothing.
    again = _run("adapter", {"catalog_uri": base_catalog, "registry_uri": registry}, tmp_path / "runs2")
    assert again["registered"] is False
    assert reg.current(ArtifactKind.ADAPTER) == adapter["adapter"]

    # Serving the registry over gRPC: the promoted base + adapter answer, fresh items included.
    from tandem.generative.reload import HotSwapRetriever
    from tandem.search.orchestrator import HybridSearcher
    from tandem_services.app import all_in_one_server
    from tandem_services.client import SearchClient
    from tandem_services.runner import BackgroundServer

    def build():
        searcher = HybridSearcher([HotSwapRetriever(registry, watch=False, device="cpu")])
        return all_in_one_server(searcher)

    with BackgroundServer(build) as server, SearchClient(server.address) as client:
        found = 0
        for it in fresh:
            r = client.search(it.title, top_k=10)
            assert not r.degraded
            assert dict(r.versions)["generative"] == \
                f"base-model:{base['base-model']}+adapter:{adapter['adapter']}"
            found += it.item_id in {h.item_id for h in r.hits}
    assert found >= len(fresh) // 2


def test_adapter_pipeline_fails_first_on_bad_thresholds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    catalog = _jsonl(tmp_path / "catalog.jsonl", synthetic_catalog(20).items)
    args = ["pipelines", "run", "adapter", "--local", "--root", str(tmp_path / "runs"), "--param",
            f"catalog_uri={catalog}", "--param", f"registry_uri={tmp_path / 'registry'}", "--param",
            "max_forgetting=1.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "Inner task failed: 'adapter-changes'" in text or "max_forgetting" in text
    assert not list((tmp_path / "runs").glob("tandem-adapter-*/train-adapter"))
