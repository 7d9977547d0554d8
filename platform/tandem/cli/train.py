"""``tandem train generative``: train the generative retriever (stages 1–3) into a model folder.

The folder it writes is what ``tandem eval --system generative --model DIR`` and the
generative service load: safetensors weights, tokenizer, semantic-ID map, manifest with
checksums, plus ``training_summary.json``, ``training_curve.png`` and ``checkpoint/``
(for ``--resume``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Train models: the generative retriever.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Train models."""


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


@app.command()
def generative(
    catalog: Annotated[Path, typer.Option("--catalog", help="Catalog file (JSONL/CSV/Parquet items).")],
    train_queries: Annotated[Path, typer.Option("--train-queries", help="Training queries (qid<TAB>text).")],
    train_qrels: Annotated[Path, typer.Option("--train-qrels", help="Training qrels (TREC: qid 0 item grade).")],
    out: Annotated[Path, typer.Option("--out", help="Model folder to write.")],
    profile: Annotated[str, typer.Option("--profile", help="`ci` (tiny, minutes on CPU) or `full`.")] = "ci",
    ids: Annotated[Path | None, typer.Option("--ids", help="Existing ID map folder (else built here).")] = None,
    pretrained: Annotated[Path | None, typer.Option(
        "--pretrained", help="Local T5 checkpoint folder (safetensors) to start from; skips stage 1.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed (default: TANDEM_SEED).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu or cuda[:N] (default: TANDEM_DEVICE).")] = None,
    min_grade: Annotated[int | None, typer.Option("--min-grade", help="Lowest qrels grade of a training pair.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a training setting, KEY=JSON (e.g. --set align_epochs=2).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
) -> None:
    """Train a generative retriever: denoising → memorisation (verified) → alignment."""
    from tandem.errors import TandemError

    try:
        from tandem.cli._options import key_values
        from tandem.training.run import train_generative

        summary = train_generative(catalog, train_queries, train_qrels, out, profile, ids=ids,
                                   pretrained=pretrained, resume=resume, seed=seed, device=device,
                                   min_grade=min_grade, overrides=key_values(set_ or [], "--set"), progress=progress,
                                   echo=typer.echo)
    except TandemError as exc:
        raise _fail(exc) from None
    _print_summary(summary, out)


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"generative training — {summary['items']} items, {summary['pairs']} pairs, "
                        f"{summary['parameters']:,} parameters, {summary['device']}")
    for col in ("stage", "epochs", "seconds", "final loss", "exact-match", "prefix-match", "stopped because"):
        table.add_column(col)
    for name, st in summary["stages"].items():
        mem = st.get("memorisation") or {}
        table.add_row(name, str(st["epochs"]), f"{st['seconds']:.1f}", f"{st['final_loss']:.4f}",
                      f"{mem['exact_match']:.3f}" if mem else "-",
                      f"{mem['mean_prefix_match']:.3f}" if mem else "-", st["stop_reason"])
    console = Console(width=140)
    console.print(table)
    console.print(f"{summary['samples_per_s']:.0f} samples/s, {summary['train_seconds']:.0f} s training, "
                  f"peak RSS {summary['peak_rss_mb']:.0f} MB; model folder {out} "
                  f"(training_summary.json, training_curve.png)")
    if not summary["memorisation_reached_target"]:
        console.print(f"[yellow]memorisation target not reached: {summary['stages']['memorise']['stop_reason']}")
