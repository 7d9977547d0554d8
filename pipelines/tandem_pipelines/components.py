"""KFP v2 lightweight components of the Tandem pipelines.

Each component is a shim around one function of :mod:`tandem_pipelines.steps` (itself
calls into :mod:`tandem`): KFP serialises only a component's own source, so the bodies
import what they need and stay short. They run in the project image (the chart's image,
which has ``tandem``, ``tandem_pipelines`` and ``kfp`` installed): nothing is pip-installed
at run time (``packages_to_install=[]``, ``install_kfp_package=False``), so a run cannot
pick up a different library version than the one the image was tested with.
``kfp.local.SubprocessRunner(use_venv=False)`` runs the same components in the current
environment.
"""

# No `from __future__ import annotations`: KFP reads the annotations as types.
import os

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

IMAGE = os.environ.get("TANDEM_PIPELINE_IMAGE", "ghcr.io/tandem-search/tandem:latest")
"""The one project image (``image.repository`` of ``charts/tandem/values.yaml``); override with
``TANDEM_PIPELINE_IMAGE`` at compile time to pin a tag or digest."""

component = dsl.component(base_image=IMAGE, packages_to_install=[], install_kfp_package=False)


@component
def snapshot_catalog(
    snapshot_uri: str,
    train_queries_uri: str,
    train_qrels_uri: str,
    dev_queries_uri: str,
    dev_qrels_uri: str,
    profile: str,
    model_size: str,
    ndcg_tolerance: float,
    min_exact_match: float,
    snapshot: Output[Dataset],
    architecture: str = "tree",
    fusion_max_queries: int = 3000,
) -> None:
    """Validate the parameters and freeze catalog + query sets (fails first on bad input)."""
    from pathlib import Path

    from tandem_pipelines import steps

    summary = steps.snapshot(snapshot_uri, train_queries_uri, train_qrels_uri, dev_queries_uri, dev_qrels_uri,
                             profile, ndcg_tolerance, min_exact_match, Path(snapshot.path), model_size=model_size,
                             architecture=architecture, fusion_max_queries=fusion_max_queries)
    snapshot.metadata.update(summary)


@component
def build_semantic_ids(snapshot: Input[Dataset], profile: str, seed: int, id_map: Output[Artifact],
                       architecture: str = "tree") -> None:
    """Semantic IDs for the snapshot's items (``tandem.ids.build_semantic_ids``)."""
    from pathlib import Path

    from tandem_pipelines import steps

    id_map.metadata.update(steps.build_ids(Path(snapshot.path), profile, seed, Path(id_map.path),
                                             architecture=architecture))


@component
def prepare_training_data(snapshot: Input[Dataset], profile: str, seed: int, training_data: Output[Dataset],
                          architecture: str = "tree") -> None:
    """Pseudo-queries per item and the BM25 run of every training query (hard negatives)
    (``tandem.training.prepare.prepare_training_data``)."""
    from pathlib import Path

    from tandem_pipelines import steps

    training_data.metadata.update(steps.prepare(Path(snapshot.path), profile, seed, Path(training_data.path),
                                                  architecture=architecture))


@component
def train_generative(snapshot: Input[Dataset], id_map: Input[Artifact], training_data: Input[Dataset], profile: str,
                     model_size: str, seed: int, model: Output[Model], training: Output[Metrics],
                     curve: Output[HTML], architecture: str = "tree") -> None:
    """Staged generative training (``tandem.training.run.train_generative``), with the
    training curve and per-stage figures as an HTML page for the KFP UI."""
    from pathlib import Path

    from tandem_pipelines import steps

    summary = steps.train(Path(snapshot.path), Path(id_map.path), profile, seed, Path(model.path),
                          overrides=steps.size_overrides(model_size), prepared=Path(training_data.path),
                          architecture=architecture)
    Path(curve.path).write_text(steps.training_report_html(Path(model.path)))
    memorisation = summary.get("final_memorisation") or {}
    for key in ("exact_match", "mean_prefix_match"):
        if key in memorisation:
            training.log_metric(f"memorisation_{key}", float(memorisation[key]))
    training.log_metric("train_seconds", float(summary["train_seconds"]))
    for stage, figures in (summary.get("stages") or {}).items():
        for key, value in (figures.get("dev") or {}).items():  # v2: dev figures at init and after each stage
            training.log_metric(f"dev_{stage}_{key}", float(value))
    training.log_metric("parameters", float(summary["parameters"]))
    model.metadata.update({"profile": profile, "items": summary["items"], "device": summary["device"]})


@component
def train_fusion(snapshot: Input[Dataset], model: Input[Model], max_queries: int, seed: int,
                 fusion_model: Output[Model], metrics: Output[Metrics], report: Output[Markdown]) -> None:
    """Learned fusion of BM25 and the new model on the snapshot's training queries
    (``tandem.fusion.fit``): the model and its fit report, the ablation as Markdown and the
    shipped model's selection figures as Metrics."""
    from pathlib import Path

    from tandem_pipelines import fusion_step

    result = fusion_step.train_fusion(Path(snapshot.path), Path(model.path), Path(fusion_model.path),
                                      max_queries=max_queries, seed=seed)
    for name, value in fusion_step.fusion_metrics(result).items():
        metrics.log_metric(name, value)
    Path(report.path).write_text(fusion_step.fusion_report_markdown(result))
    fusion_model.metadata.update({"version": result["version"], "queries": result["queries"]})


@component
def evaluate_model(snapshot: Input[Dataset], model: Input[Model], metrics: Output[Metrics],
                   evaluation: Output[Artifact], report: Output[Markdown]) -> None:
    """Dev metrics of the model (``tandem.eval``) as Metrics, JSON and a Markdown table."""
    import json
    from pathlib import Path

    from tandem_pipelines import steps

    result = steps.evaluate(Path(snapshot.path), Path(model.path))
    for name, value in result["metrics"].items():
        metrics.log_metric(name, float(value))
    metrics.log_metric("exact_match", result["exact_match"])
    Path(evaluation.path).write_text(json.dumps(result, indent=2))
    figures = {**result["metrics"], "exact_match": result["exact_match"]}
    rows = "".join(f"| {k} | {v:.4f} |\n" for k, v in figures.items())
    title = f"# Dev evaluation ({result['queries']} queries)"
    Path(report.path).write_text(f"{title}\n\n| measure | value |\n|---|---|\n{rows}")


@component
def promotion_gate(evaluation: Input[Artifact], registry_uri: str, ndcg_tolerance: float, min_exact_match: float,
                   decision: Output[Artifact], report: Output[Markdown], figures: Output[Metrics]) -> bool:
    """The base promotion rule (``tandem.registry.promotion.gate_base``) against the current base."""
    import json
    from pathlib import Path

    from tandem_pipelines import steps

    result = steps.gate(json.loads(Path(evaluation.path).read_text()), registry_uri, ndcg_tolerance, min_exact_match)
    return steps.write_gate_outputs(result, decision.path, report.path, figures)


@component
def register_base(snapshot: Input[Dataset], id_map: Input[Artifact], model: Input[Model], evaluation: Input[Artifact],
                  decision: Input[Artifact], fusion_model: Input[Model], registry_uri: str,
                  registered: Output[Artifact]) -> None:
    """Publish snapshot, ID map, model and its fusion model to ``tandem.registry``; promote
    them together when the gate passed."""
    import json
    from pathlib import Path

    from tandem_pipelines import steps

    result = steps.register(Path(snapshot.path), Path(id_map.path), Path(model.path),
                            json.loads(Path(evaluation.path).read_text()), json.loads(Path(decision.path).read_text()),
                            registry_uri, fusion_dir=Path(fusion_model.path))
    Path(registered.path).write_text(json.dumps(result, indent=2))
    registered.metadata.update(result)


# --------------------------------------------------------------------------- adapter pipeline


@component
def adapter_changes(catalog_uri: str, new_items_uri: str, registry_uri: str, max_forgetting: float,
                    min_new_recall: float, changes: Output[Dataset], base_model: Output[Model]) -> int:
    """Validate the parameters, fetch the current base and split new/changed vs old items;
    returns how many items are new or changed (0 = nothing to train this hour)."""
    from pathlib import Path

    from tandem_pipelines import steps

    summary = steps.adapter_changes(catalog_uri, new_items_uri, registry_uri, max_forgetting, min_new_recall,
                                    Path(changes.path), Path(base_model.path))
    changes.metadata.update(summary)
    base_model.metadata.update({"ref": summary["base"]})
    return int(summary["new_items"])


@component
def train_adapter(changes: Input[Dataset], base_model: Input[Model], seed: int, replay: float, queries_per_item: int,
                  adapter: Output[Model], summary_json: Output[Artifact], checks: Output[Metrics],
                  report: Output[Markdown]) -> None:
    """LoRA adapter with replay (``tandem.training.adapter.train_adapter``) and its
    new-item / forgetting checks, before vs after, as Metrics and a Markdown table."""
    import json
    from pathlib import Path

    from tandem_pipelines import steps

    summary = steps.train_adapter(Path(changes.path), Path(base_model.path), seed, Path(adapter.path),
                                  {"replay": replay, "queries_per_item": queries_per_item})
    metrics = summary["metrics"]
    for name, value in metrics.items():
        checks.log_metric(name, float(value))
    checks.log_metric("train_seconds", float(summary["train_seconds"]))
    checks.log_metric("trainable_parameters", float(summary["parameters"]["trainable"]))
    rows = "".join(f"| {k} | {v:.4f} |\n" for k, v in metrics.items())
    Path(report.path).write_text(f"# Adapter checks ({summary['new_items']} new/changed items, "
                                 f"{summary['old_items']} old)\n\n| check | value |\n|---|---|\n{rows}")
    Path(summary_json.path).write_text(json.dumps(summary, default=str))
    adapter.metadata.update({"new_items": summary["new_items"], "train_seconds": summary["train_seconds"]})


@component
def adapter_gate(summary_json: Input[Artifact], max_forgetting: float, min_new_recall: float,
                 decision: Output[Artifact], report: Output[Markdown], figures: Output[Metrics]) -> bool:
    """The adapter promotion rule (``tandem.registry.promotion.gate_adapter``)."""
    import json
    from pathlib import Path

    from tandem_pipelines import steps

    result = steps.adapter_gate(json.loads(Path(summary_json.path).read_text()), max_forgetting, min_new_recall)
    return steps.write_gate_outputs(result, decision.path, report.path, figures)


@component
def register_adapter(adapter: Input[Model], summary_json: Input[Artifact], decision: Input[Artifact],
                     registry_uri: str, registered: Output[Artifact]) -> None:
    """Publish the adapter to ``tandem.registry``; current only when the gate passed."""
    import json
    from pathlib import Path

    from tandem_pipelines import steps

    result = steps.register_adapter(Path(adapter.path), json.loads(Path(summary_json.path).read_text()),
                                    json.loads(Path(decision.path).read_text()), registry_uri)
    Path(registered.path).write_text(json.dumps(result, indent=2))
    registered.metadata.update(result)
