"""Pipeline steps without KFP: first-step validation, the gate against the registry, registration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tandem.errors import InvalidInput
from tandem.registry import ArtifactKind, Registry
from tandem_pipelines import steps

DATA = Path(__file__).resolve().parents[1] / "data" / "catalog"


def _snapshot(out: Path, **overrides: object) -> dict[str, object]:
    args: dict[str, object] = {
        "snapshot_uri": str(DATA / "products.jsonl"), "train_queries_uri": str(DATA / "queries.tsv"),
        "train_qrels_uri": str(DATA / "qrels.txt"), "dev_queries_uri": str(DATA / "queries.tsv"),
        "dev_qrels_uri": str(DATA / "qrels.txt"), "profile": "ci", "ndcg_tolerance": 0.01, "min_exact_match": 0.9,
        "out": out,
    }
    args.update(overrides)
    return steps.snapshot(**args)  # type: ignore[arg-type]


def test_snapshot_freezes_valid_items_and_query_sets(tmp_path: Path) -> None:
    summary = _snapshot(tmp_path / "snap")
    assert summary["items"] > 0 and summary["dev_queries"] > 0
    lines = (tmp_path / "snap" / steps.CATALOG).read_text().splitlines()
    assert len(lines) == summary["items"]
    assert {"item_id", "title"} <= set(json.loads(lines[0]))
    for name in (steps.TRAIN_QUERIES, steps.TRAIN_QRELS, steps.DEV_QUERIES, steps.DEV_QRELS, "snapshot.json"):
        assert (tmp_path / "snap" / name).is_file()


def test_snapshot_of_bad_rows_keeps_only_valid_items(tmp_path: Path) -> None:
    summary = _snapshot(tmp_path / "snap", snapshot_uri=str(DATA / "bad_rows.jsonl"))
    assert summary["rows_skipped"] > 0


@pytest.mark.parametrize(
    ("override", "field"),
    [({"snapshot_uri": "/nonexistent/catalog.jsonl"}, "snapshot_uri"),
     ({"snapshot_uri": "memory://nowhere/catalog.jsonl"}, "snapshot_uri"),
     ({"dev_qrels_uri": "/nonexistent/qrels.txt"}, "dev_qrels_uri"),
     ({"ndcg_tolerance": 1.5}, "ndcg_tolerance"),
     ({"min_exact_match": -0.1}, "min_exact_match"),
     ({"profile": "huge"}, "profile")],
)
def test_snapshot_fails_first_with_a_clear_message(tmp_path: Path, override: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput, match=f"`{field}`"):
        _snapshot(tmp_path / "snap", **override)


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "data.txt").write_text(text)
    return path


def test_gate_and_register_against_the_registry(tmp_path: Path) -> None:
    uri = str(tmp_path / "registry")
    snap = tmp_path / "snap"
    _snapshot(snap)
    ids, model = _folder(tmp_path / "ids", "ids"), _folder(tmp_path / "model", "weights")
    _folder(model / "checkpoint", "resume state")

    first = {"metrics": {"nDCG@10": 0.40, "R(rel=4)@10": 0.5}, "exact_match": 0.95}
    decision = steps.gate(first, uri, 0.01, 0.9)
    assert decision["promote"] and decision["current_version"] is None
    out = steps.register(snap, ids, model, first, decision, uri)
    reg = Registry(uri)
    assert out["promoted"] and reg.current(ArtifactKind.BASE_MODEL) == out["base-model"]
    manifest = reg.manifest(ArtifactKind.BASE_MODEL, out["base-model"])
    assert manifest.metrics["nDCG@10"] == 0.40 and manifest.metrics["exact_match"] == 0.95
    assert set(manifest.parents) == {f"id-map:{out['id-map']}", f"snapshot:{out['snapshot']}"}
    assert set(manifest.files) == {"data.txt"}  # the resume checkpoint is not published

    worse = {"metrics": {"nDCG@10": 0.30, "R(rel=4)@10": 0.4}, "exact_match": 0.97}
    decision = steps.gate(worse, uri, 0.01, 0.9)
    assert not decision["promote"] and decision["current_version"] == out["base-model"]
    assert decision["figures"]["current_ndcg10"] == 0.40
    rejected = steps.register(snap, ids, model, worse, decision, uri)
    assert not rejected["promoted"]
    assert reg.current(ArtifactKind.BASE_MODEL) == out["base-model"]  # kept
    assert rejected["base-model"] in reg.versions(ArtifactKind.BASE_MODEL)  # but recorded for audit


@pytest.mark.parametrize(("max_forgetting", "min_new_recall", "field"),
                         [(1.5, 0.5, "`max_forgetting`"), (0.05, -0.1, "`min_new_recall`"),
                          (float("nan"), 0.5, "`max_forgetting`")])
def test_adapter_changes_refuses_bad_thresholds_first(max_forgetting: float, min_new_recall: float, field: str,
                                                      tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=field):
        steps.adapter_changes(str(tmp_path / "missing.jsonl"), "", str(tmp_path / "registry"), max_forgetting,
                              min_new_recall, tmp_path / "changes", tmp_path / "base")


def test_adapter_changes_needs_a_current_base(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no current base-model; run the base pipeline first"):
        steps.adapter_changes(str(tmp_path / "catalog.jsonl"), "", str(tmp_path / "registry"), 0.05, 0.5,
                              tmp_path / "changes", tmp_path / "base")


def test_adapter_gate_uses_forgetting_and_new_item_recall() -> None:
    from tandem.training.adapter_metrics import AdapterMetrics

    def summary(new_r10: float, forgetting: float) -> dict[str, Any]:
        m = AdapterMetrics(k=10, new_recall=new_r10, new_recall_before=0.0, new_exact_match=1.0,
                           new_exact_match_before=0.0, old_recall=0.9, old_recall_before=0.9,
                           old_exact_match=0.95 - forgetting, old_exact_match_before=0.95)
        assert m.as_dict()["forgetting"] == pytest.approx(forgetting)
        return {"config": {"eval_k": 10}, "metrics": m.as_dict()}

    assert steps.adapter_gate(summary(0.8, 0.01), 0.05, 0.5)["promote"] is True
    refused = steps.adapter_gate(summary(0.8, 0.2), 0.05, 0.5)
    assert refused["promote"] is False and "forgetting" in refused["markdown"]
    assert steps.adapter_gate(summary(0.1, 0.0), 0.05, 0.5)["promote"] is False
    with pytest.raises(InvalidInput, match="`new_r10`"):
        steps.adapter_gate({"config": {"eval_k": 10}, "metrics": {"forgetting": 0.0}}, 0.05, 0.5)


def test_model_size_is_checked_first_and_maps_to_a_preset(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="`model_size`"):
        _snapshot(tmp_path / "snap", model_size="gigantic")
    assert not (tmp_path / "snap").exists()
    assert steps.size_overrides("") == {}
    assert steps.size_overrides("full")["size"].d_model == 256


def _fusion_report() -> dict[str, object]:
    """What :func:`tandem.fusion.fit.fit_learned_fusion` reports (figures made up, shape real)."""
    figures = {"nDCG@10": 0.5, "R(rel=4)@10": 0.6, "R(rel=4)@100": 0.9, "RR(rel=4)@10": 0.55}
    ablation = {"bm25 only": {"lists": "bm25", "scores": [], **figures},
                "+ cosine": {"lists": "query", "scores": ["gen_logprob", "gen_cosine"], **figures, "nDCG@10": 0.61}}
    return {"train_queries": 80, "selection_queries": 20, "slots": ["bm25/query", "generative/query"],
            "bm25 (whole query)": {**figures, "nDCG@10": 0.45}, "rrf": {**figures, "nDCG@10": 0.48},
            "ablation": ablation, "learned": ablation["+ cosine"], "selected": {},
            "feature_importance": {"generative__query__rr": 12.5, "gen_logprob": 3.0}, "queries": 100,
            "candidates": 100, "version": "learned:abc"}


def test_register_publishes_the_fusion_model_with_its_base_and_promotes_them_together(tmp_path: Path) -> None:
    from tandem.registry.fusion import MODEL_FILE, REPORT_FILE, current_fusion_for_base

    uri = str(tmp_path / "registry")
    snap = tmp_path / "snap"
    _snapshot(snap)
    ids, model = _folder(tmp_path / "ids", "ids"), _folder(tmp_path / "model", "weights")
    fusion = _folder(tmp_path / "fusion", "unused")
    (fusion / MODEL_FILE).write_text("{}")
    (fusion / REPORT_FILE).write_text(json.dumps(_fusion_report()))

    first = {"metrics": {"nDCG@10": 0.40}, "exact_match": 0.95}
    out = steps.register(snap, ids, model, first, steps.gate(first, uri, 0.01, 0.9), uri, fusion_dir=fusion)
    reg = Registry(uri)
    assert out["promoted"] and reg.current(ArtifactKind.FUSION) == out["fusion"]
    manifest = reg.manifest(ArtifactKind.FUSION, out["fusion"])
    assert manifest.parents == [f"base-model:{out['base-model']}"]
    assert manifest.metrics["nDCG@10"] == 0.61 and manifest.metrics["rrf_nDCG@10"] == 0.48
    assert manifest.metrics["bm25_nDCG@10"] == 0.45
    found = current_fusion_for_base(reg)
    assert found is not None and found.ref == f"fusion:{out['fusion']}"

    worse = {"metrics": {"nDCG@10": 0.30}, "exact_match": 0.97}
    rejected = steps.register(snap, ids, model, worse, steps.gate(worse, uri, 0.01, 0.9), uri, fusion_dir=fusion)
    assert not rejected["promoted"] and rejected["fusion"] in reg.versions(ArtifactKind.FUSION)
    assert reg.current(ArtifactKind.FUSION) == out["fusion"]  # the fusion model stays with its base


def test_fusion_report_for_the_kfp_ui() -> None:
    from tandem_pipelines.fusion_step import fusion_metrics, fusion_report_markdown

    report = _fusion_report()
    text = fusion_report_markdown(report)
    assert "| system | nDCG@10 | R(rel=4)@10 | R(rel=4)@100 | RR(rel=4)@10 |" in text
    for row in ("| bm25 (whole query) | 0.4500 |", "| rrf | 0.4800 |", "| bm25 only | 0.5000 |", "| + cosine | 0.6100 |"):
        assert row in text
    assert "| generative__query__rr | 12.5 |" in text and "80 training, 20 selection" in text
    metrics = fusion_metrics(report)
    assert metrics["nDCG@10"] == 0.61 and metrics["bm25_RR(rel=4)@10"] == 0.55
    assert all(isinstance(v, float) for v in metrics.values())


@pytest.mark.parametrize("bad", [5, 0, True])
def test_fusion_max_queries_is_checked_first(tmp_path: Path, bad: object) -> None:
    with pytest.raises(InvalidInput, match="`fusion_max_queries`"):
        _snapshot(tmp_path / "snap", fusion_max_queries=bad)
    assert not (tmp_path / "snap").exists()
