"""``tandem index build|upsert|delete|stats``: the BM25 (Lucene) index of a catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tandem_app.cli._options import default_index

app = typer.Typer(help="Build and update the BM25 (Lucene) index.", no_args_is_help=True)

IndexDir = Annotated[Path, typer.Option("--index", help="Index directory (default: <home>/indexes/bm25).")]


def _fail(e: Exception) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True).print(f"[red]error:[/red] {e}")
    return typer.Exit(2)


@app.command()
def build(
    catalog: Annotated[Path, typer.Argument(help="Catalog file (JSONL, CSV, Parquet, Anserini JSONL).")],
    index: IndexDir = None,  # type: ignore[assignment]
    format: Annotated[str | None, typer.Option("--format", help="jsonl, csv, parquet or anserini.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on the first bad row instead of skipping it.")] = False,
    stemmer: Annotated[str, typer.Option(help="porter, krovetz or none.")] = "porter",
    keep_stopwords: Annotated[bool, typer.Option("--keep-stopwords")] = False,
    threads: Annotated[int, typer.Option(help="Indexing threads.")] = 2,
) -> None:
    """Build (or rebuild) the index of a catalog file."""
    from rich.console import Console

    from tandem.catalog import load_items
    from tandem.errors import TandemError
    from tandem.sparse import SparseConfig, build_index

    console = Console()
    target = index or default_index()
    try:
        loaded = load_items(catalog, format=format, strict=strict)
        for err in loaded.errors[:10]:
            console.print(f"[yellow]skipped[/yellow] {err}")
        if loaded.skipped > 10:
            console.print(f"[yellow]... and {loaded.skipped - 10} more skipped rows[/yellow]")
        cfg = SparseConfig(stemmer=stemmer, keep_stopwords=keep_stopwords, index_threads=threads)
        with console.status(f"indexing {len(loaded.items)} items"):
            stats = build_index(loaded.items, target, cfg)
    except (TandemError, ValueError) as e:
        raise _fail(e) from None
    console.print(loaded.summary())
    console.print(
        f"index {stats.index_dir}: {stats.documents} documents, {stats.unique_terms} terms, "
        f"built in {stats.build_seconds:.1f}s"
    )


@app.command()
def upsert(
    items: Annotated[Path, typer.Argument(help="File of items to add or replace (any catalog format).")],
    index: IndexDir = None,  # type: ignore[assignment]
    format: Annotated[str | None, typer.Option("--format")] = None,
    strict: Annotated[bool, typer.Option("--strict")] = False,
) -> None:
    """Add or replace items in an existing index (visible to searches immediately)."""
    import time

    from rich.console import Console

    from tandem.catalog import load_items
    from tandem.errors import TandemError
    from tandem.sparse import SparseRetriever

    console = Console()
    try:
        loaded = load_items(items, format=format, strict=strict)
        for err in loaded.errors[:10]:
            console.print(f"[yellow]skipped[/yellow] {err}")
        start = time.perf_counter()
        with SparseRetriever(index or default_index()) as retriever:
            n = retriever.upsert(loaded.items)
            stats = retriever.stats()
    except (TandemError, ValueError) as e:
        raise _fail(e) from None
    seconds = time.perf_counter() - start
    console.print(f"upserted {n} items in {seconds:.2f}s; index now has {stats.documents} documents")


@app.command()
def delete(
    item_ids: Annotated[list[str], typer.Argument(help="Item ids to delete.")],
    index: IndexDir = None,  # type: ignore[assignment]
) -> None:
    """Delete items by id."""
    from rich.console import Console

    from tandem.errors import TandemError
    from tandem.sparse import SparseRetriever

    try:
        with SparseRetriever(index or default_index()) as retriever:
            before = retriever.stats().documents
            retriever.delete(item_ids)
            after = retriever.stats().documents
    except (TandemError, ValueError) as e:
        raise _fail(e) from None
    Console().print(f"deleted {before - after} of {len(item_ids)} ids; index now has {after} documents")


@app.command()
def stats(
    index: IndexDir = None,  # type: ignore[assignment]
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Document and term counts of an index."""
    from rich.console import Console

    from tandem.errors import TandemError
    from tandem.sparse import SparseRetriever

    try:
        with SparseRetriever(index or default_index(), writable=False) as retriever:
            s = retriever.stats()
    except (TandemError, ValueError) as e:
        raise _fail(e) from None
    if as_json:
        print(json.dumps(s.as_dict()))
        return
    Console().print(
        f"{s.index_dir}: {s.documents} documents, {s.deleted} deleted, "
        f"{s.unique_terms if s.unique_terms is not None else 'n/a'} unique terms, "
        f"{s.total_terms} term occurrences, version {s.version}"
    )
