"""What each pipeline step does, as plain functions over local paths.

The KFP components in :mod:`tandem_pipelines.components` are one-line shims around these,
so a step can be tested and debugged without KFP, and all real work stays in :mod:`tandem`
library calls (catalog loading, semantic IDs, training, evaluation, the promotion gate,
the registry). Files of a *snapshot* folder:

``catalog.jsonl`` (validated, normalised items), ``queries.train.tsv``, ``qrels.train.txt``,
``queries.dev.tsv``, ``qrels.dev.txt`` and ``snapshot.json`` (sources and counts).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tandem.errors import InvalidInput

CATALOG = "catalog.jsonl"
TRAIN_QUERIES, TRAIN_QRELS = "queries.train.tsv", "qrels.train.txt"
DEV_QUERIES, DEV_QRELS = "queries.dev.tsv", "qrels.dev.txt"
EVAL_JSON = "evaluation.json"
PROFILES = ("ci", "full")


def _fetch(uri: str, field: str, dest: Path) -> Path:
    """Copy ``uri`` (a local path or any fsspec URI) to ``dest``; :class:`InvalidInput` naming
    ``field`` when it does not exist, so a bad parameter fails the first step clearly."""
    import fsspec

    if not uri:
        raise InvalidInput(f"`{field}` is empty")
    fs, path = fsspec.core.url_to_fs(uri)
    if not fs.isfile(path):
        raise InvalidInput(f"`{field}` {uri!r} does not exist or is not a file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fs.get_file(path, str(dest))
    return dest


#: ``architecture`` values: ``tree`` = v2 (pretrained encoder + ID-tree decoder), ``t5`` = v1.
ARCHITECTURES = ("tree", "t5")


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise InvalidInput(f"`architecture` must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")


def size_overrides(model_size: str) -> dict[str, Any]:
    """Training overrides for the pipeline's ``model_size`` (empty = the profile's own size; v1 T5 only)."""
    from tandem.generative.model import SIZE_PRESETS

    if not model_size:
        return {}
    if model_size not in SIZE_PRESETS:
        raise InvalidInput(f"`model_size` must be empty or one of {', '.join(SIZE_PRESETS)}, got {model_size!r}")
    return {"size": SIZE_PRESETS[model_size]}


def snapshot(snapshot_uri: str, train_queries_uri: str, train_qrels_uri: str, dev_queries_uri: str,
             dev_qrels_uri: str, profile: str, ndcg_tolerance: float, min_exact_match: float,
             out: Path, model_size: str = "", architecture: str = "tree",
             fusion_max_queries: int | None = None) -> dict[str, Any]:
    """Validate every parameter, then freeze the catalog and query sets into folder ``out``.

    The catalog goes through :func:`tandem.catalog.loaders.load_items`, so the snapshot holds
    only valid, normalised items; rejected rows are counted in the returned summary.
    """
    from tandem.catalog.loaders import load_items
    from tandem.catalog.queries import read_qrels, read_queries
    from tandem.registry.promotion import validate_base_thresholds

    if profile not in PROFILES:
        raise InvalidInput(f"`profile` must be one of {', '.join(PROFILES)}, got {profile!r}")
    _check_architecture(architecture)
    if model_size and architecture != "t5":
        raise InvalidInput("`model_size` sizes the v1 T5; leave it empty for `architecture` tree")
    size_overrides(model_size)
    validate_base_thresholds(ndcg_tolerance, min_exact_match)
    if fusion_max_queries is not None:
        from tandem_pipelines.fusion_step import check_max_queries

        check_max_queries(fusion_max_queries)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        # Keep the source name: the loader detects the format from the suffix.
        raw = _fetch(snapshot_uri, "snapshot_uri", Path(tmp) / Path(snapshot_uri.rstrip("/")).name)
        loaded = load_items(raw)
    if not loaded.items:
        raise InvalidInput(f"`snapshot_uri` {snapshot_uri!r} has no valid items ({loaded.summary()})")
    with open(out / CATALOG, "w", encoding="utf-8") as f:
        for item in loaded.items:
            f.write(item.model_dump_json(exclude_none=True) + "\n")
    sources = {TRAIN_QUERIES: ("train_queries_uri", train_queries_uri),
               TRAIN_QRELS: ("train_qrels_uri", train_qrels_uri),
               DEV_QUERIES: ("dev_queries_uri", dev_queries_uri), DEV_QRELS: ("dev_qrels_uri", dev_qrels_uri)}
    for name, (field, uri) in sources.items():
        _fetch(uri, field, out / name)
    counts = {"items": len(loaded.items), "rows_skipped": loaded.skipped,
              "train_queries": len(read_queries(out / TRAIN_QUERIES)),
              "train_qrels": len(read_qrels(out / TRAIN_QRELS)),
              "dev_queries": len(read_queries(out / DEV_QUERIES)), "dev_qrels": len(read_qrels(out / DEV_QRELS))}
    summary = {"snapshot_uri": snapshot_uri, "profile": profile, "architecture": architecture, **counts}
    (out / "snapshot.json").write_text(json.dumps(summary, indent=2))
    return summary


def build_ids(snapshot_dir: Path, profile: str, seed: int, out: Path, architecture: str = "tree") -> dict[str, Any]:
    """Semantic IDs of the snapshot's catalog with the profile's ID shape, saved to ``out``
    (v2: clusters of the pretrained encoder's title vectors)."""
    from tandem.catalog.loaders import load_items
    from tandem.ids import build_semantic_ids
    from tandem.training.config import id_config
    from tandem.training.tree_config import tree_id_config, tree_profile

    _check_architecture(architecture)
    items = load_items(snapshot_dir / CATALOG, strict=True).items
    if architecture == "tree":
        cfg = tree_id_config(tree_profile(profile, seed=seed), len(items))
    else:
        cfg = id_config(profile).model_copy(update={"seed": seed})
    id_map = build_semantic_ids(items, cfg)
    id_map.save(str(out))
    return {"items": len(id_map), "code_space": id_map.code_space()}


def prepare(snapshot_dir: Path, profile: str, seed: int, out: Path, architecture: str = "tree") -> dict[str, Any]:
    """Pseudo-queries of the snapshot's items and the BM25 run of all training queries
    (:func:`tandem.training.prepare.prepare_training_data`), for the training step.

    v2 needs no BM25 run (its full-softmax loss has every item as a negative) and makes its
    title-span pseudo-queries itself, so for ``tree`` the step records that and writes nothing."""
    _check_architecture(architecture)
    if architecture == "tree":
        out.mkdir(parents=True, exist_ok=True)
        return {"architecture": "tree", "pseudo_queries": 0, "bm25_queries": 0}
    from tandem.catalog.loaders import load_items
    from tandem.catalog.queries import read_queries
    from tandem.training.config import profile_config
    from tandem.training.prepare import prepare_training_data

    config = profile_config(profile, seed=seed)
    items = load_items(snapshot_dir / CATALOG, strict=True).items
    queries = list(read_queries(snapshot_dir / TRAIN_QUERIES).values())
    return prepare_training_data(items, queries, config.pseudo_queries, config.seed, out)


#: Share of the snapshot's training queries the v2 model never trains on; the fusion step fits
#: the learned fusion on them (fitting on trained queries over-trusts the generative scores).
FUSION_HOLDOUT = 0.25


def train(snapshot_dir: Path, ids_dir: Path, profile: str, seed: int, out: Path,
          overrides: dict[str, Any] | None = None, prepared: Path | None = None,
          architecture: str = "tree") -> dict[str, Any]:
    """Staged generative training on the snapshot with the given semantic IDs; the model
    folder is ``out``. v2 (:func:`tandem.training.tree_run.train_tree_from_files`) reports dev
    figures at init and after each stage; v1 (:func:`tandem.training.run.train_generative`)
    uses the prepared pseudo-queries / BM25 run."""
    from tandem.training.run import train_generative

    _check_architecture(architecture)
    if architecture == "tree":
        from tandem.training.tree_run import train_tree_from_files

        # Queries the fusion step fits on must be unseen by the model (see TreeTrainConfig.fusion_holdout).
        overrides = {"fusion_holdout": FUSION_HOLDOUT, **(overrides or {})}

        with tempfile.TemporaryDirectory() as cache:
            return train_tree_from_files(snapshot_dir / CATALOG, snapshot_dir / TRAIN_QUERIES,
                                         snapshot_dir / TRAIN_QRELS, out, profile, seed=seed, overrides=overrides,
                                         ids=ids_dir, dev_queries=snapshot_dir / DEV_QUERIES,
                                         dev_qrels=snapshot_dir / DEV_QRELS, cache_dir=Path(cache))

    return train_generative(snapshot_dir / CATALOG, snapshot_dir / TRAIN_QUERIES, snapshot_dir / TRAIN_QRELS, out,
                            profile, ids=ids_dir, seed=seed, overrides=overrides, progress=False, prepared=prepared)


def training_report_html(model_dir: Path) -> str:
    """An HTML page for the KFP UI: the training curve (loss per step, memorisation per
    epoch) inline, and the per-stage figures of the training summary."""
    import base64
    import html

    from tandem.training.report import CURVE_FILE, SUMMARY_FILE

    summary = json.loads((model_dir / SUMMARY_FILE).read_text())
    rows = []
    for stage, s in summary.get("stages", {}).items():
        mem = s.get("memorisation") or {}
        dev = s.get("dev") or {}
        rows.append(f"<tr><td>{html.escape(stage)}</td><td>{s.get('epochs', '')}</td><td>{s.get('seconds', '')}</td>"
                    f"<td>{s.get('final_loss', '')}</td><td>{mem.get('exact_match', '')}</td>"
                    f"<td>{dev.get('ndcg@10', '')}</td><td>{dev.get('r@100', '')}</td>"
                    f"<td>{html.escape(s.get('stop_reason', ''))}</td></tr>")
    curve = model_dir / CURVE_FILE
    img = (f'<img alt="training curve" src="data:image/png;base64,{base64.b64encode(curve.read_bytes()).decode()}">'
           if curve.is_file() else "<p>(no training curve was written)</p>")
    return ("<html><body><h1>Generative training</h1>"
            f"<p>{summary['items']} items, {summary['pairs']} pairs, {summary['parameters']:,} parameters, "
            f"{summary['train_seconds']:.0f} s on {html.escape(str(summary['device']))}</p>{img}"
            "<table border=1><tr><th>stage</th><th>epochs</th><th>seconds</th><th>final loss</th>"
            f"<th>exact-match</th><th>dev nDCG@10</th><th>dev R@100</th><th>stop reason</th></tr>{''.join(rows)}</table></body></html>")


def evaluate(snapshot_dir: Path, model_dir: Path, num_beams: int = 10) -> dict[str, Any]:
    """Dev metrics of the trained model, plus its final memorisation exact-match from training."""
    from tandem.catalog.queries import read_qrels, read_queries
    from tandem.eval import default_measures
    from tandem.eval import evaluate as evaluate_run
    from tandem.eval import run_retriever
    from tandem.generative import load_retriever

    retriever = load_retriever(str(model_dir), num_beams=num_beams)
    queries, qrels = read_queries(snapshot_dir / DEV_QUERIES), read_qrels(snapshot_dir / DEV_QRELS)
    result = evaluate_run(run_retriever(retriever, queries, k=100), qrels, default_measures(), list(queries))
    summary = json.loads((model_dir / "training_summary.json").read_text())
    memorisation = summary.get("final_memorisation") or {}
    return {"metrics": result.metrics, "queries": result.queries,
            "exact_match": float(memorisation.get("exact_match", 0.0))}


def gate(evaluation: dict[str, Any], registry_uri: str, ndcg_tolerance: float,
         min_exact_match: float) -> dict[str, Any]:
    """The base promotion decision against the registry's current base model.

    The current base's nDCG@10 is the one recorded in its manifest when it was registered;
    ``current_version`` is returned so the register step can promote with compare-and-swap.
    """
    from tandem.registry import ArtifactKind, Registry
    from tandem.registry.promotion import gate_base

    reg = Registry(registry_uri or None)
    current = reg.current(ArtifactKind.BASE_MODEL)
    current_ndcg = reg.manifest(ArtifactKind.BASE_MODEL, current).metrics.get("nDCG@10") if current else None
    decision = gate_base(evaluation["metrics"]["nDCG@10"], evaluation["exact_match"], current_ndcg,
                         ndcg_tolerance=ndcg_tolerance, min_exact_match=min_exact_match)
    return {**decision.as_dict(), "current_version": current, "markdown": decision.to_markdown()}


def write_gate_outputs(result: dict[str, Any], decision_path: str, report_path: str, figures: Any) -> bool:
    """Store a gate's result as the step's artifacts: the decision JSON, its Markdown table
    and its figures as KFP metrics (``figures`` is an ``Output[Metrics]``); returns the verdict."""
    result = dict(result)
    Path(report_path).write_text(result.pop("markdown"))
    Path(decision_path).write_text(json.dumps(result, indent=2))
    for name, value in result["figures"].items():
        if value is not None:
            figures.log_metric(name, float(value))
    figures.log_metric("promote", float(result["promote"]))
    return bool(result["promote"])


def register(snapshot_dir: Path, ids_dir: Path, model_dir: Path, evaluation: dict[str, Any],
             decision: dict[str, Any], registry_uri: str, fusion_dir: Path | None = None) -> dict[str, Any]:
    """Publish snapshot, ID map and model (with lineage and metrics), and the fusion model of
    ``fusion_dir`` with the base as its parent; promote them all when the gate said so, and
    only if the current base is still the one the gate compared against."""
    from tandem.registry import ArtifactKind, Registry
    from tandem.training.checkpoint import CHECKPOINT_DIR

    reg = Registry(registry_uri or None)
    metrics = {k: float(v) for k, v in evaluation["metrics"].items()}
    metrics["exact_match"] = float(evaluation["exact_match"])
    with tempfile.TemporaryDirectory() as tmp:
        snap = Path(tmp) / "snapshot"
        shutil.copytree(snapshot_dir, snap)  # KFP may mount inputs read-only; publish reads a plain copy
        snap_v = reg.publish(ArtifactKind.SNAPSHOT, snap)
        ids_v = reg.publish(ArtifactKind.ID_MAP, ids_dir, parents=[f"snapshot:{snap_v}"])
        # The resume checkpoint repeats the weights and is no part of what serving loads.
        model = Path(tmp) / "model"
        shutil.copytree(model_dir, model, ignore=shutil.ignore_patterns(CHECKPOINT_DIR))
        model_v = reg.publish(ArtifactKind.BASE_MODEL, model, parents=[f"id-map:{ids_v}", f"snapshot:{snap_v}"],
                              metrics=metrics)
        fusion_v = None
        if fusion_dir is not None:
            from tandem.registry.fusion import REPORT_FILE
            from tandem_pipelines.fusion_step import fusion_metrics

            fusion = Path(tmp) / "fusion"
            shutil.copytree(fusion_dir, fusion)  # KFP may mount inputs read-only; publish reads a plain copy
            report = json.loads((fusion / REPORT_FILE).read_text())
            fusion_v = reg.publish(ArtifactKind.FUSION, fusion, parents=[f"base-model:{model_v}"],
                                   metrics=fusion_metrics(report))
    promoted = bool(decision["promote"])
    if promoted:
        reg.promote(ArtifactKind.BASE_MODEL, model_v, expected=decision.get("current_version"))
        # After the base (whose compare-and-swap may refuse): serving takes a fusion model only
        # with its own base, so any reader between the two pointer moves falls back safely.
        if fusion_v is not None:
            reg.promote(ArtifactKind.FUSION, fusion_v)
        reg.promote(ArtifactKind.ID_MAP, ids_v)
        reg.promote(ArtifactKind.SNAPSHOT, snap_v)
    return {"base-model": model_v, "id-map": ids_v, "snapshot": snap_v, "promoted": promoted, "registry": reg.uri,
            **({"fusion": fusion_v} if fusion_v is not None else {})}


# --------------------------------------------------------------------------- adapter pipeline

NEW_ITEMS, OLD_ITEMS, CHANGES_JSON = "new.jsonl", "old.jsonl", "changes.json"


def _write_items(path: Path, items: list[Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for item in items:
            f.write(item.model_dump_json(exclude_none=True) + "\n")


def adapter_changes(catalog_uri: str, new_items_uri: str, registry_uri: str, max_forgetting: float,
                    min_new_recall: float, out: Path, base_out: Path) -> dict[str, Any]:
    """Validate the parameters, fetch the registry's current base model into ``base_out`` and
    split the catalog into the items added or changed since that base and the old ones.

    ``new_items_uri`` empty = the catalog items the base's ID map does not know. Writes
    ``new.jsonl``, ``old.jsonl`` and ``changes.json`` (counts, base reference) into ``out``.
    """
    from tandem.registry import Registry
    from tandem.registry.promotion import validate_adapter_thresholds
    from tandem.training.adapter import select_items
    from tandem.training.adapter_publish import resolve_base

    validate_adapter_thresholds(max_forgetting, min_new_recall)
    reg = Registry(registry_uri or None)
    out.mkdir(parents=True, exist_ok=True)
    with resolve_base(reg, dest=base_out) as base, tempfile.TemporaryDirectory() as tmp:
        catalog = _fetch(catalog_uri, "catalog_uri", Path(tmp) / Path(catalog_uri.rstrip("/")).name)
        new_file = _fetch(new_items_uri, "new_items_uri", Path(tmp) / ("new-" + Path(new_items_uri).name)) \
            if new_items_uri else None
        new, old = select_items(base.path, catalog=catalog, new_items=new_file)
    _write_items(out / NEW_ITEMS, new)
    _write_items(out / OLD_ITEMS, old)
    summary = {"base": base.ref, "new_items": len(new), "old_items": len(old), "catalog_uri": catalog_uri}
    (out / CHANGES_JSON).write_text(json.dumps(summary, indent=2))
    return summary


def train_adapter(changes_dir: Path, base_dir: Path, seed: int, out: Path,
                  overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """An adapter for the new items on the base (:func:`tandem.training.adapter.train_adapter`:
    reserved-space IDs, LoRA with replay, new-item and forgetting checks)."""
    from tandem.catalog.loaders import load_items
    from tandem.training.adapter import adapter_config
    from tandem.training.adapter import train_adapter as train

    changes = json.loads((changes_dir / CHANGES_JSON).read_text())
    new = load_items(changes_dir / NEW_ITEMS, strict=True).items
    old = load_items(changes_dir / OLD_ITEMS, strict=True).items if changes["old_items"] else []
    config = adapter_config({"seed": seed, **(overrides or {})})
    return train(base_dir, new, old, out, config, base_ref=changes["base"])


def adapter_gate(summary: dict[str, Any], max_forgetting: float, min_new_recall: float) -> dict[str, Any]:
    """The adapter promotion decision (:func:`tandem.training.adapter_publish.gate`)."""
    from tandem.training.adapter_publish import gate

    decision = gate(summary, max_forgetting, min_new_recall)
    return {**decision.as_dict(), "markdown": decision.to_markdown()}


def register_adapter(adapter_dir: Path, summary: dict[str, Any], decision: dict[str, Any],
                     registry_uri: str) -> dict[str, Any]:
    """Publish the adapter with its base as parent and its metrics; make it current when the
    gate passed (a rejected adapter stays in the registry, inspectable, never served)."""
    from tandem.generative.adapter_artifact import read_adapter_manifest
    from tandem.generative.tree_adapter import FORMAT as TREE_ADAPTER, read_tree_adapter_manifest
    from tandem.registry import Registry
    from tandem.training.adapter_publish import publish

    reg = Registry(registry_uri or None)
    kind = json.loads((adapter_dir / "manifest.json").read_text()).get("format")
    read = read_tree_adapter_manifest if kind == TREE_ADAPTER else read_adapter_manifest
    base_ref = read(adapter_dir)["base"].get("ref", "")
    promoted = bool(decision["promote"])
    version = publish(reg, adapter_dir, summary["metrics"], promoted, base_ref)
    return {"adapter": version, "base": base_ref, "promoted": promoted, "registry": reg.uri}
