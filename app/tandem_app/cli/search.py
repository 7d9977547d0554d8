"""``tandem search "query"``: one search, printed as a table with each hit's sources.

``--server HOST:PORT`` asks a running gateway; otherwise the same hybrid path runs
in-process over a local index (``--index``), optionally with a generative source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

if TYPE_CHECKING:
    from tandem.search.results import SearchResult


def _filters(price_min: float | None, price_max: float | None, category: str | None,
             brand: str | None) -> list[Any]:
    from tandem.search.request import FilterSpec

    out = []
    if price_min is not None or price_max is not None:
        out.append(FilterSpec("price", min=price_min, max=price_max))
    if category:
        out.append(FilterSpec("category", prefix=category))
    if brand:
        out.append(FilterSpec("brand", equals=brand))
    return out


def _print(query: str, hits: list[tuple[str, float, str, list[tuple[str, int, float]]]], *, took_ms: float,
           cache_hit: bool, degraded_reasons: list[str], versions: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"tandem search: {query!r}")
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("#", "right"), ("item_id", "left"), ("score", "right"), ("title", "left"), ("sources (rank)", "left"))
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold")
    for n, (item_id, score, title, prov) in enumerate(hits, 1):
        table.add_row(str(n), item_id, f"{score:.4f}", title, " ".join(f"{s}#{r}" for s, r, _ in prov))
    console = Console(width=140)
    console.print(table)
    status = "DEGRADED: " + "; ".join(degraded_reasons) if degraded_reasons else "complete"
    console.print(f"{len(hits)} hits in {took_ms:.1f} ms · cache {'hit' if cache_hit else 'miss'} · {status}")
    console.print("versions: " + ", ".join(f"{k}={v}" for k, v in sorted(versions.items())))


def search(
    query: Annotated[str, typer.Argument(help="The query text.")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Number of hits (1..1000).")] = 10,
    server: Annotated[str | None, typer.Option(help="host:port of a running gateway.")] = None,
    token: Annotated[str | None, typer.Option(envvar="TANDEM_TOKEN", help="Bearer token for --server.")] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="PEM CA of --server (turns TLS on).")] = None,
    index: Annotated[Path | None, typer.Option(
        help="Local Lucene index, without --server (default: <home>/indexes/bm25, what `tandem index build` writes).")] = None,
    source: Annotated[str, typer.Option(help="Local sources: `sparse` (BM25) or `hybrid` (+ generative).")] = "sparse",
    generative_factory: Annotated[str | None, typer.Option(
        help="module:callable returning the generative Retriever (hybrid without a model dir).")] = None,
    generative_arg: Annotated[list[str], typer.Option(help="Argument for --generative-factory.")] = [],  # noqa: B006
    model: Annotated[Path | None, typer.Option(help="Generative model directory (hybrid).")] = None,
    price_min: Annotated[float | None, typer.Option(help="Only items at or above this price.")] = None,
    price_max: Annotated[float | None, typer.Option(help="Only items at or below this price.")] = None,
    category: Annotated[str | None, typer.Option(help="Only items under this category path (a/b/c).")] = None,
    brand: Annotated[str | None, typer.Option(help="Only items of this brand.")] = None,
    timeout_ms: Annotated[float, typer.Option(help="Deadline of the search, ms.")] = 5000.0,
    intent_model: Annotated[Path | None, typer.Option(
        help="Local: intent decomposer fitted by `tandem intent fit` (as `tandem serve --intent-model`).")] = None,
    fusion: Annotated[str, typer.Option(
        help="Local: rrf, minmax, zscore, learned or auto, chosen as `tandem serve --fusion` chooses.")] = "auto",
    fusion_model: Annotated[Path | None, typer.Option(help="Local: learned fusion model (JSON).")] = None,
    catalog: Annotated[Path | None, typer.Option(
        help="Local: items JSONL for titles and filters (default: the index's stored fields).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON instead of a table.")] = False,
) -> None:
    """Search from the command line (a running gateway, or a local index): hits with their sources.

    Locally, the searcher is assembled as the gateway's is (:func:`tandem.search.build.build_searcher`:
    same catalog rule, intents and fusion choice), so the same models rank alike."""
    from tandem_app.cli._options import server_address
    from tandem.errors import TandemError

    filters = _filters(price_min, price_max, category, brand)
    show = _print_json if as_json else _print
    try:
        if server:
            _remote(query, top_k, filters, server_address(server), token, tls_ca, timeout_ms, show)
        else:
            local = LocalOptions(index=index, source=source, generative_factory=generative_factory,
                                 generative_arg=list(generative_arg), model=model, intent_model=intent_model,
                                 fusion=fusion, fusion_model=fusion_model, catalog=catalog)
            r = local_search(query, top_k, filters, local, timeout_ms / 1000)
            show(query, [(h.item_id, h.score, h.title, h.provenance) for h in r.hits], took_ms=r.took_ms,
                 cache_hit=r.cache_hit, degraded_reasons=r.degraded_reasons, versions=r.versions)
    except TandemError as exc:
        typer.echo(f"tandem search: {exc}", err=True)
        raise typer.Exit(2) from None


def _remote(query: str, top_k: int, filters: list, server: str, token: str | None, tls_ca: Path | None,
            timeout_ms: float, show: Callable[..., None]) -> None:
    import grpc

    from tandem_services.client import ChannelOptions, SearchClient  # the client lives with the services

    with SearchClient(server, ChannelOptions(token=token, tls_ca=tls_ca)) as client:
        try:
            r = client.search(query, top_k=top_k, filters=filters, timeout_s=timeout_ms / 1000)
        except grpc.RpcError as exc:
            typer.echo(f"tandem search: {exc.code().name}: {exc.details()}", err=True)
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                from tandem_app.cli._options import NO_SERVER_HINT

                typer.echo(f"tandem search: {server}: {NO_SERVER_HINT}", err=True)
            raise typer.Exit(1) from None
    show(query, [(h.item_id, h.score, h.title, [(p.source, p.rank, p.score) for p in h.provenance]) for h in r.hits],
         took_ms=r.took_ms, cache_hit=r.cache_hit, degraded_reasons=list(r.degraded_reasons),
         versions=dict(r.versions))


@dataclass
class LocalOptions:
    """What an in-process search runs over: the sources (``sparse``: BM25 over ``index``;
    ``hybrid``: plus the generative model of ``model`` or ``generative_factory``) and the
    choices that decide the ranking, named as ``tandem serve`` names them."""

    index: Path | None = None
    source: str = "sparse"
    generative_factory: str | None = None
    generative_arg: list[str] = field(default_factory=list)
    model: Path | None = None
    intent_model: Path | None = None
    fusion: str = "auto"
    fusion_model: Path | None = None
    catalog: Path | None = None


def _sources(opts: LocalOptions) -> list[Any]:
    """The retrievers of ``opts`` (a usage error when they cannot be had)."""
    if opts.source not in ("sparse", "hybrid"):
        raise typer.BadParameter("must be `sparse` or `hybrid`", param_hint="--source")
    index = opts.index
    if index is None:
        from tandem_app.cli._options import default_index

        index = default_index()
    if not index.is_dir():
        raise typer.BadParameter(f"no index at {index}: build one with `tandem index build CATALOG --index "
                                 f"{index}`, or give --index DIR (or --server HOST:PORT)", param_hint="--index")
    if opts.source == "hybrid" and not (opts.generative_factory or opts.model):
        raise typer.BadParameter("hybrid needs --model or --generative-factory", param_hint="--source")
    from tandem.jvm import ensure_jvm

    ensure_jvm()
    from tandem.sparse import SparseRetriever

    retrievers: list[Any] = [SparseRetriever(index, writable=False)]
    if opts.source == "hybrid":
        if opts.generative_factory:
            import importlib

            module, _, attr = opts.generative_factory.partition(":")
            retrievers.append(getattr(importlib.import_module(module), attr)(*opts.generative_arg))
        else:
            from tandem.generative import load_retriever

            retrievers.append(load_retriever(str(opts.model)))
    return retrievers


def local_search(query: str, top_k: int, filters: list, opts: LocalOptions, deadline_s: float) -> SearchResult:
    """One search in-process, by a searcher assembled as the gateway's
    (:func:`~tandem.search.build.build_searcher`); sources and searcher are closed after."""
    from tandem.errors import InvalidInput
    from tandem.search.build import SearcherSpec, build_searcher
    from tandem.search.request import SearchRequest

    retrievers = _sources(opts)
    try:
        # The gateway's rule: a --model folder of the registry brings the fusion model promoted with it.
        served = opts.model if opts.source == "hybrid" and not opts.generative_factory else None
        try:
            searcher = build_searcher(SearcherSpec(
                sources=retrievers, fusion=opts.fusion, fusion_model=opts.fusion_model, model=served,
                intent_model=opts.intent_model, catalog_file=opts.catalog))
        except InvalidInput as exc:  # names the choice at fault (`fusion`, `fusion_model`, `catalog_file`)
            raise typer.BadParameter(str(exc)) from None
        try:
            return searcher.search(SearchRequest(query, top_k=top_k, filters=tuple(filters)), deadline_s=deadline_s)
        finally:
            searcher.close()
    finally:
        for ret in retrievers:
            ret.close()


def _print_json(query: str, hits: list[tuple[str, float, str, list[tuple[str, int, float]]]], *, took_ms: float,
                cache_hit: bool, degraded_reasons: list[str], versions: dict[str, str]) -> None:
    import json

    typer.echo(json.dumps({
        "query": query, "took_ms": took_ms, "cache_hit": cache_hit, "degraded_reasons": list(degraded_reasons),
        "versions": dict(versions),
        "hits": [{"item_id": i, "score": sc, "title": t, "provenance": [list(p) for p in prov]}
                 for i, sc, t, prov in hits],
    }))


def register(app: typer.Typer) -> None:
    """Attach ``search`` as a top-level command (it takes the query as its argument)."""
    app.command("search")(search)
