"""``tandem failed``: the failed-query cycle (issue 22) by hand, and its report.

``tandem failed cycle`` diagnoses a JSONL of failed searches (what the collector writes from
``tandem.failed-queries``) against a catalog's vocabulary and a feedback store, as the
pipeline step does; ``tandem failed report`` prints the top failures of a cycle folder and
what was done about each (corrected, nearest terms, later-clicked items as targets).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Failed queries: diagnose them and show what was done.", no_args_is_help=True)


@app.command()
def cycle(
    failed: Annotated[Path, typer.Option(help="Failed searches (JSONL from tandem.failed-queries).")],
    catalog: Annotated[Path, typer.Option(help="Catalog file whose titles are the vocabulary.")],
    out: Annotated[Path, typer.Option(help="Folder for samples.jsonl, corrections.json, report.json.")],
    feedback_db: Annotated[Path | None, typer.Option(help="Feedback store (tandem stream feedback).")] = None,
    min_count: Annotated[int, typer.Option(help="Diagnose only queries that failed this often.")] = 1,
) -> None:
    """Run one failed-query cycle and print its summary."""
    from tandem.errors import TandemError
    from tandem_pipelines.failed_step import failed_query_step

    try:
        report = failed_query_step(failed, catalog, out, feedback_db=feedback_db, min_count=min_count)
    except TandemError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "top"}, indent=2))


@app.command()
def report(
    folder: Annotated[Path, typer.Argument(help="A cycle folder (holds report.json).")],
    top: Annotated[int, typer.Option(help="How many failures to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The most frequent failures of a cycle and what was done about each."""
    from tandem.errors import TandemError
    from tandem.failed.cycle import read_report

    if top < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--top")
    try:
        rep = read_report(folder)
    except TandemError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    rows = rep["top"][:top]
    if as_json:
        typer.echo(json.dumps({**{k: v for k, v in rep.items() if k != "top"}, "top": rows}, indent=2))
        return
    typer.echo(f"{rep['failures']} failed searches in {rep['groups']} queries; kinds {rep['kinds']}; "
               f"{rep['samples']} corrective samples, {rep['corrections']} corrections")
    typer.echo(f"{'count':>5}  {'reasons':24}  {'kind':15}  query -> action")
    for r in rows:
        reasons = ",".join(f"{k}:{v}" for k, v in sorted(r["reasons"].items()))
        typer.echo(f"{r['count']:>5}  {reasons[:24]:24}  {r['kind']:15}  {r['query']!r} -> {r['action']}")
