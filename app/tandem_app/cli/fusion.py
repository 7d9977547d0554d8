"""``tandem fusion train``: fit the learned (LambdaMART) fusion the gateway uses with ``--fusion-model``.

With ``--model`` the generative source adds its list and, for every candidate of either
source, its forced-decoding log-probability and encoder cosine (item scores); the report
holds the ablation (BM25 only → + generative list → + forced decoding → + cosine → +
intents, one model per row on the same split) and the shipped model's feature importances.
A model trained with ``--set fusion_holdout=SHARE`` names the training queries it never saw;
the fusion is then fitted on those only (the generative scores of trained queries are optimistic).

The candidate lists are recorded from the same hybrid searcher ``tandem eval --system
hybrid`` and ``tandem serve`` build (see :mod:`tandem.fusion.fit`), so the model is trained on
what it will rank. Serve it with ``tandem serve ... --fusion-model FILE`` (``--fusion auto``
then picks it) or evaluate it with ``tandem eval --system hybrid --fusion-model FILE``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, cast

import typer

app = typer.Typer(help="Learned fusion: train the LambdaMART ranker over the hybrid searcher's lists.",
                  no_args_is_help=True)


@app.command()
def train(
    catalog: Annotated[Path, typer.Option(help="Catalog file the BM25 source indexes (JSONL/CSV/Parquet).")],
    queries: Annotated[Path, typer.Option(help="Training queries (qid<TAB>text).")],
    qrels: Annotated[Path, typer.Option(help="Their qrels (TREC: qid 0 item grade).")],
    out: Annotated[Path, typer.Option(help="Fusion model JSON to write.")],
    model: Annotated[Path | None, typer.Option(help="Generative model folder: adds the generative source.")] = None,
    adapter: Annotated[Path | None, typer.Option(help="Adapter folder trained on --model.")] = None,
    intent_model: Annotated[Path | None, typer.Option(
        "--intent-model", help="Intent decomposer (`tandem intent fit`): lists per sub-intent, as served.")] = None,
    max_queries: Annotated[int, typer.Option(help="Judged queries used at most (seeded sample).")] = 3000,
    selection_share: Annotated[float, typer.Option(help="Share of them held out for model selection.")] = 0.2,
    candidates: Annotated[int, typer.Option(help="Hits per source and intent (the searcher's depth).")] = 100,
    generative_depth: Annotated[int | None, typer.Option(
        help="Hits of the generative source per intent (default --candidates).", min=1)] = None,
    events: Annotated[Path | None, typer.Option(
        help="Click/purchase log (JSONL: qid, item_id, event) for the multi-task labels.")] = None,
    feedback_db: Annotated[Path | None, typer.Option(
        help="Feedback store (tandem stream feedback) joined with --request-log: the gateway's clicks and "
             "purchases as multi-task labels (queries without judgements join the training set).")] = None,
    request_log: Annotated[Path | None, typer.Option(
        help="Request log (SQLite, tandem.feedback.requests) naming each request's query, for --feedback-db.")] = None,
    relevance_weight: Annotated[float, typer.Option(help="λ of the relevance task: label weight of a grade.")] = 1.0,
    click_weight: Annotated[float, typer.Option(help="λ of the click task: label weight of a click.")] = 0.0,
    purchase_weight: Annotated[float, typer.Option(help="λ of the purchase task: label weight of a purchase.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Sampling, split and LightGBM seed.")] = 13,
) -> None:
    """Record the searcher's candidate lists for judged queries, train LambdaMART, write the model."""
    from tandem.catalog.queries import read_qrels, read_queries
    from tandem.config import get_settings
    from tandem.errors import TandemError
    from tandem.eval.systems import SystemSpec, build_system
    from tandem.fusion.fit import collect_candidates, fit_learned_fusion, select_queries
    from tandem.fusion.learned import catalog_titles, read_events
    from tandem.training.tree_run import read_fusion_holdout

    if (feedback_db is None) != (request_log is None):
        raise typer.BadParameter("--feedback-db and --request-log go together", param_hint="--request-log")
    if events is not None and feedback_db is not None:
        raise typer.BadParameter("give --events or --feedback-db/--request-log, not both", param_hint="--events")
    if generative_depth is not None and model is None:
        raise typer.BadParameter("needs --model (the generative source it sets the depth of)",
                                 param_hint="--generative-depth")
    try:
        qs, judged = read_queries(queries), read_qrels(qrels)
        holdout = read_fusion_holdout(model) if model is not None else set()
        ids = select_queries([q for q in qs if q in judged], holdout, max_queries, seed)
        behaviour = read_events(events) if events is not None else None
        if feedback_db is not None and request_log is not None:
            behaviour, extra = _behaviour(feedback_db, request_log, qs)
            qs |= extra
            ids += sorted(extra)
            typer.echo(f"fusion train: behaviour labels on {len(behaviour)} queries ({len(extra)} without "
                       "judgements)", err=True)
        if holdout:  # queries the generative model never trained on: its scores there are honest
            typer.echo(f"fusion train: {len(ids)} judged queries of the model's fusion holdout", err=True)
        if not ids:
            raise typer.BadParameter("no query in --queries has judgements in --qrels", param_hint="--qrels")
        options: dict[str, Any] = {"fusion": "rrf", "sources": "bm25,generative" if model else "bm25",
                                   "candidates": candidates}
        if generative_depth is not None:
            options["generative_depth"] = generative_depth
        if intent_model is not None:
            options["intent_model"] = str(intent_model)
        if adapter is not None:
            options["adapter"] = str(adapter)
        spec = SystemSpec(catalog=catalog, model=model, options=options, home=get_settings().home)
        hybrid = build_system("hybrid", spec)
        started = time.perf_counter()
        try:
            lists, scores = collect_candidates(hybrid, {q: qs[q] for q in ids}, candidates)
            searcher = cast(Any, hybrid).searcher  # the hybrid system wraps the served searcher
            titles = catalog_titles(searcher.catalog) if searcher.catalog is not None else None
            collect_s = time.perf_counter() - started
            fitted, report = fit_learned_fusion(
                lists, judged, titles=titles, selection_share=selection_share, seed=seed,
                events=behaviour, click_weight=click_weight, relevance_weight=relevance_weight,
                purchase_weight=purchase_weight, depth=candidates, scores=scores)
        finally:
            hybrid.close()
        path = fitted.save(out)
    except TandemError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    report |= {"out": str(path), "queries": len(ids), "model_fusion_holdout": len(holdout), "candidates": candidates,
               "generative_depth": (generative_depth or candidates) if model is not None else None,
               "collect_seconds": round(collect_s, 1), "train_seconds": round(time.perf_counter() - started - collect_s, 1), "version": fitted.version()}
    typer.echo(json.dumps(report, indent=2))


def _behaviour(feedback_db: Path, request_log: Path, queries: dict[str, str]) -> tuple[dict, dict[str, str]]:
    """Clicks/purchases of the feedback store joined to their queries through the request log."""
    from tandem.errors import InvalidInput
    from tandem.feedback.requests import RequestLog, behaviour_events
    from tandem.feedback.store import FeedbackStore

    for path, name in ((feedback_db, "--feedback-db"), (request_log, "--request-log")):
        if not path.is_file():
            raise InvalidInput(f"`{name}` {path} does not exist")
    log = RequestLog(request_log)
    try:
        with FeedbackStore(feedback_db) as store:
            return behaviour_events(log, (e for _, e in store.events()), queries)
    finally:
        log.close()
