"""``tandem intent fit|parse``: fit the catalog intent decomposer and inspect what it reads.

``fit`` mines vocabularies from a catalog's titles and trains the sub-intent tagger, writing
``DIR/intent.json``; serve it with ``tandem serve intent --model DIR`` (or ``--intent-model``
on the gateway / all-in-one). ``parse`` prints a query's typed spans, price constraint and
sub-queries as JSON.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Query intent decomposition: fit on a catalog, parse queries.", no_args_is_help=True)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


@app.command()
def fit(
    catalog: Annotated[Path, typer.Option(help="Catalog file (JSONL/CSV/Parquet items; format from the suffix).")],
    out: Annotated[Path, typer.Option(help="Directory to write intent.json into.")],
    min_count: Annotated[int, typer.Option(help="Least title count for a mined brand/type/attribute phrase.")] = 3,
    max_titles: Annotated[int, typer.Option(help="Titles sampled to train the tagger.")] = 8000,
    max_intents: Annotated[int, typer.Option(help="Most sub-queries per query (the whole query included).")] = 4,
    seed: Annotated[int, typer.Option(help="Sampling and training seed.")] = 0,
) -> None:
    """Mine vocabularies from the catalog's titles and train the tagger by distant supervision."""
    from tandem.catalog.loaders import load_items
    from tandem.errors import TandemError
    from tandem.intent import CatalogIntentDecomposer

    try:
        loaded = load_items(catalog)
        items = loaded.items
        started = time.perf_counter()
        d = CatalogIntentDecomposer.fit([it.title for it in items], [it.price for it in items],
                                        min_count=min_count, max_titles=max_titles, max_intents=max_intents,
                                        seed=seed)
        path = d.save(out)
    except TandemError as exc:
        raise _fail(exc) from None
    sizes = {label: len(v) for label, v in sorted(d.vocab.phrases.items())}
    typer.echo(json.dumps({"out": str(path), "items": len(items), "skipped_rows": loaded.skipped,
                           "seconds": round(time.perf_counter() - started, 1), "vocabulary": sizes,
                           "tagger_features": len(d.tagger.weights), "version": d.version()}, indent=2))


@app.command()
def parse(
    query: Annotated[str, typer.Argument(help="The query to decompose.")],
    model: Annotated[Path, typer.Option(help="Directory written by `tandem intent fit`.")],
) -> None:
    """Print the query's typed spans, price constraint and sub-queries as JSON."""
    from tandem.errors import TandemError
    from tandem.intent import CatalogIntentDecomposer

    try:
        d = CatalogIntentDecomposer.load(model)
        if not query.strip():
            raise _fail(ValueError("`query` is empty"))
        p = d.parse(query)
    except TandemError as exc:
        raise _fail(exc) from None
    typer.echo(json.dumps({
        "query": p.query,
        "spans": [asdict(s) for s in p.spans],
        "price": None if p.price is None else {"min": p.price.min, "max": p.price.max, "relative": p.price.relative},
        "intents": [asdict(i) for i in d.decompose(query)],
    }, indent=2))
