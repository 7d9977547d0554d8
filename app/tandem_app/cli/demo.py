"""``tandem demo``: the main job on embedded defaults (what ``make demo`` runs)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer


def demo(
    data: Annotated[Path | None, typer.Option(
        "--data", help="Home Depot folder (default: TANDEM_DATA/homedepot or ../shared/data/homedepot).")] = None,
    dev_queries: Annotated[int, typer.Option("--dev-queries", help="Dev queries sampled and evaluated.")] = 40,
    train_queries: Annotated[int, typer.Option("--train-queries", help="Train queries sampled for training.")] = 80,
) -> None:
    """Sample Home Depot → ingest → train the generative model → serve over gRPC → stream
    fresh items → evaluate BM25, generative and hybrid."""
    from tandem.catalog.datasets import data_root
    from tandem.config import get_settings
    from tandem.errors import TandemError

    started = time.perf_counter()
    try:
        root = data if data is not None else data_root("homedepot")
        # The demo lives in the services package: it starts the all-in-one gRPC server.
        from tandem_app.demo import DemoConfig, run_demo

        cfg = DemoConfig(dev_queries=dev_queries, train_queries=train_queries)
        run_demo(get_settings().home, root, cfg, echo=typer.echo)
    except TandemError as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"demo finished in {time.perf_counter() - started:.0f} s; "
               f"figures in {get_settings().home / 'demo' / 'summary.json'}")


def register(app: typer.Typer) -> None:
    """Attach ``demo`` as a top-level command."""
    app.command("demo")(demo)
