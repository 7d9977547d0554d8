"""Base then adapter pipeline with kfp.local on the ``ci`` profile, then serving what they promoted.

The base pipeline trains on the synthetic catalog minus its fresh items (the session's
``ci_base_pipeline`` run, copied); the adapter pipeline finds the items the current base
lacks, trains and gates an adapter and promotes it; a gRPC all-in-one server started on the
registry then serves base + adapter (the versions it reports are the promoted ones), and the
registry holds both with their metrics.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.catalog.datasets import is_fresh
from tandem_app.cli import app
from tandem.registry import ArtifactKind, Registry
from tandem_testing.ci_adapter import jsonl
from tandem_testing.ci_pipeline import N_ITEMS, BaseRun, run_pipeline
from tandem_testing.synthetic_catalog import synthetic_catalog

pytestmark = pytest.mark.e2e


def test_base_then_adapter_pipeline_then_serving(ci_base_pipeline: BaseRun, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # shared CI cores: spinning OpenMP peers slow training down
    run = ci_base_pipeline.copy_to(tmp_path / "base")  # this test promotes adapters into the registry
    fresh = [it for it in synthetic_catalog(N_ITEMS).items if is_fresh(it.item_id)]
    assert fresh
    catalog, base_catalog, registry, base = run.catalog, run.params["snapshot_uri"], str(run.registry), run.out
    assert base["promoted"] is True
    adapter = run_pipeline("adapter", {"catalog_uri": catalog, "registry_uri": registry, "min_new_recall": 0.3,
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
    again = run_pipeline("adapter", {"catalog_uri": base_catalog, "registry_uri": registry}, tmp_path / "runs2")
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
    catalog = jsonl(tmp_path / "catalog.jsonl", synthetic_catalog(20).items)
    args = ["pipelines", "run", "adapter", "--local", "--root", str(tmp_path / "runs"), "--param",
            f"catalog_uri={catalog}", "--param", f"registry_uri={tmp_path / 'registry'}", "--param",
            "max_forgetting=1.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "Inner task failed: 'adapter-changes'" in text or "max_forgetting" in text
    assert not list((tmp_path / "runs").glob("tandem-adapter-*/train-adapter"))
