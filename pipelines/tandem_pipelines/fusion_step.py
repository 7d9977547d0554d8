"""The base pipeline's fusion step, as a plain function over local paths (like :mod:`steps`).

Right after the generative model is trained, the learned fusion is fitted on what the served
hybrid searcher hands its fuser for that model: BM25 over the snapshot's catalog plus the new
generative model, each source's lists and the generative item scores (forced-decoding
log-probability, encoder cosine) of every candidate, recorded for the snapshot's training
queries the model was not trained on (its fusion holdout, see ``steps.FUSION_HOLDOUT``;
all training queries for a model without one) (:func:`tandem.fusion.fit.collect_candidates`), then LambdaMART with its ablation
(:func:`tandem.fusion.fit.fit_learned_fusion`). The lists include the intent decomposer's
sub-queries: the step first fits it on the snapshot's catalog (``tandem intent fit``:
sub-queries, price filters, spelling corrections) and writes it beside the model as
:data:`~tandem.registry.fusion.INTENT_FILE`, because the fusion model's features are per
(source, intent kind) and it ranks best with the decomposer it was fitted with; serving with
the promoted fusion model takes that decomposer too (:func:`tandem.search.build.build_searcher`).
The register step publishes the folder as a ``fusion`` artifact whose parent is the base
model, promoted when the base is.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, cast

from tandem.errors import InvalidInput
from tandem.registry.fusion import MODEL_FILE, REPORT_FILE
from tandem_pipelines.steps import CATALOG, TRAIN_QRELS, TRAIN_QUERIES

#: Hits per source (the searcher's depth), as ``tandem fusion train`` and the gateway use.
CANDIDATES = 100
DEFAULT_MAX_QUERIES = 3000
MIN_QUERIES = 10
"""Fewer judged queries than this and :func:`tandem.fusion.fit.fit_learned_fusion` refuses."""


def check_max_queries(max_queries: int) -> None:
    """:class:`InvalidInput` unless ``max_queries`` leaves learned fusion enough queries
    (checked by the snapshot step too, so a bad parameter fails before training)."""
    if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < MIN_QUERIES:
        raise InvalidInput(f"`fusion_max_queries` must be an integer >= {MIN_QUERIES} (learned fusion needs "
                           f"that many judged queries), got {max_queries!r}")


def train_fusion(snapshot_dir: Path, model_dir: Path, out: Path, max_queries: int = DEFAULT_MAX_QUERIES,
                 seed: int = 13, candidates: int = CANDIDATES) -> dict[str, Any]:
    """Fit the learned fusion of BM25 and the model in ``model_dir`` on at most ``max_queries``
    judged training queries of the snapshot (a seeded sample); writes :data:`MODEL_FILE` and
    :data:`REPORT_FILE` to folder ``out`` (with the intent decomposer it fitted on the catalog,
    :data:`INTENT_FILE`) and returns the report (selection figures of RRF, BM25 and every
    ablation row, feature importances)."""
    from tandem.catalog.loaders import load_items
    from tandem.catalog.queries import read_qrels, read_queries
    from tandem.eval.systems import SystemSpec, build_system
    from tandem.fusion.fit import collect_candidates, fit_learned_fusion, select_queries
    from tandem.fusion.learned import catalog_titles
    from tandem.intent.decomposer import CatalogIntentDecomposer
    from tandem.training.tree_run import read_fusion_holdout

    check_max_queries(max_queries)
    queries, qrels = read_queries(snapshot_dir / TRAIN_QUERIES), read_qrels(snapshot_dir / TRAIN_QRELS)
    holdout = read_fusion_holdout(model_dir)  # queries the model never trained on (v2 models from this pipeline)
    ids = select_queries([q for q in queries if q in qrels], holdout, max_queries, seed)
    items = load_items(snapshot_dir / CATALOG, strict=True).items
    out.mkdir(parents=True, exist_ok=True)
    intents = CatalogIntentDecomposer.fit([it.title for it in items], [it.price for it in items], seed=seed)
    intents.save(out)  # the artifact's INTENT_FILE
    options = {"fusion": "rrf", "sources": "bm25,generative", "candidates": candidates, "intent_model": str(out)}
    with tempfile.TemporaryDirectory() as home:  # the BM25 index of this snapshot is built here, then dropped
        spec = SystemSpec(catalog=snapshot_dir / CATALOG, model=model_dir, options=options, home=Path(home))
        hybrid = build_system("hybrid", spec)
        try:
            lists, scores = collect_candidates(hybrid, {q: queries[q] for q in ids}, candidates)
            searcher = cast(Any, hybrid).searcher  # the hybrid system wraps the served searcher
            titles = catalog_titles(searcher.catalog) if searcher.catalog is not None else None
            model, report = fit_learned_fusion(lists, qrels, titles=titles, seed=seed, depth=candidates,
                                               scores=scores)
        finally:
            hybrid.close()
    model.save(out / MODEL_FILE)
    report = {**report, "queries": len(ids), "model_fusion_holdout": len(holdout), "candidates": candidates,
              "version": model.version(), "intents": intents.version()}
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2))
    return report


def fusion_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The shipped model's selection figures, and RRF's and BM25's for comparison, flat
    (KFP metrics and the registry manifest's ``metrics``)."""
    out = {m: float(v) for m, v in report["learned"].items() if isinstance(v, int | float)}
    for name, key in (("rrf", "rrf"), ("bm25", "bm25 (whole query)")):
        out |= {f"{name}_{m}": float(v) for m, v in report[key].items()}
    return out


def fusion_report_markdown(report: dict[str, Any]) -> str:
    """The fit's report for the KFP UI: the ablation on the selection queries next to RRF and
    BM25, then the shipped model's feature importances."""
    measures = list(report["learned"].keys() - {"lists", "scores"})
    measures.sort(key=list(report["rrf"]).index)
    head = "| system | " + " | ".join(measures) + " |\n|---" + "|---" * len(measures) + "|\n"

    def row(name: str, figures: dict[str, Any]) -> str:
        return f"| {name} | " + " | ".join(f"{float(figures[m]):.4f}" for m in measures) + " |\n"

    rows = row("bm25 (whole query)", report["bm25 (whole query)"]) + row("rrf", report["rrf"])
    rows += "".join(row(name, figures) for name, figures in report["ablation"].items())
    gains = "".join(f"| {f} | {g:g} |\n" for f, g in list(report["feature_importance"].items())[:15])
    return (f"# Learned fusion ({report['train_queries']} training, {report['selection_queries']} selection "
            f"queries; {report['candidates']} candidates per list)\n\nSelection-query figures; the last ablation "
            f"row is the shipped model.\n\n{head}{rows}\n## Feature importance (gain)\n\n| feature | gain |\n"
            f"|---|---|\n{gains}")
