"""``tandem registry list|show|publish|promote``: versioned artifacts and their current pointers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Versioned artifacts (base models, adapters, ID maps, indexes, snapshots).",
                  no_args_is_help=True)  # fmt: skip

Uri = Annotated[
    str | None,
    typer.Option("--uri", help="Registry fsspec URI (default: TANDEM_ARTIFACTS_URI, else <home>/registry)."),
]
Kind = Annotated[str, typer.Argument(help="base-model, adapter, id-map, index or snapshot.")]


def _fail(e: Exception) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True).print(f"[red]error:[/red] {e}")
    return typer.Exit(2)


@app.command("list")
def list_(kind: Annotated[str | None, typer.Argument(help="Only this kind.")] = None, uri: Uri = None) -> None:
    """Versions per kind, newest last; ``*`` marks current."""
    from rich.console import Console
    from rich.table import Table

    from tandem.errors import TandemError
    from tandem.registry import ArtifactKind, Registry

    try:
        reg = Registry(uri)
        kinds = [ArtifactKind.parse(kind)] if kind else list(ArtifactKind)
        table = Table("kind")
        table.add_column("version", no_wrap=True, min_width=25)  # copied into commands: never wrapped
        for col in ("current", "parents", "metrics"):
            table.add_column(col)
        for k in kinds:
            current = reg.current(k)
            for v in reg.versions(k):
                m = reg.manifest(k, v)
                metrics = ", ".join(f"{n}={x:g}" for n, x in m.metrics.items())
                table.add_row(k.value, v, "*" if v == current else "", ", ".join(m.parents), metrics)
    except TandemError as e:
        raise _fail(e) from None
    Console().print(table)


@app.command()
def show(kind: Kind, version: Annotated[str | None, typer.Argument(help="Default: current.")] = None,
         uri: Uri = None) -> None:  # fmt: skip
    """Print a version's manifest after verifying every file's checksum."""
    from tandem.errors import TandemError
    from tandem.registry import Registry

    try:
        reg = Registry(uri)
        art = reg.get(kind, version) if version else reg.resolve_current(kind)
    except TandemError as e:
        raise _fail(e) from None
    typer.echo(art.manifest.model_dump_json(indent=2))
    typer.echo(f"# verified: {len(art.manifest.files)} files at {art.uri}")


@app.command()
def publish(
    kind: Kind,
    src: Annotated[Path, typer.Argument(help="Folder whose files make the artifact.")],
    parent: Annotated[list[str] | None, typer.Option("--parent", help="kind:version this was made from.")] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="name=value, repeatable.")] = None,
    promote: Annotated[bool, typer.Option("--promote", help="Make it current.")] = False,
    uri: Uri = None,
) -> None:
    """Publish a folder as a new version of KIND; prints the version."""
    from tandem.errors import InvalidInput, TandemError
    from tandem.registry import Registry

    try:
        metrics: dict[str, float] = {}
        for m in metric or []:
            name, sep, value = m.partition("=")
            try:
                metrics[name] = float(value)
            except ValueError:
                raise InvalidInput(f"`--metric` must be name=number, got {m!r}") from None
            if not sep or not name:
                raise InvalidInput(f"`--metric` must be name=number, got {m!r}")
        version = Registry(uri).publish(kind, src, parents=parent or [], metrics=metrics, promote=promote)
    except TandemError as e:
        raise _fail(e) from None
    typer.echo(version)


@app.command()
def promote(
    kind: Kind,
    version: str,
    expected: Annotated[
        str | None, typer.Option("--expected", help="Only if current is still this version (compare-and-swap).")
    ] = None,
    uri: Uri = None,
) -> None:
    """Point KIND's current at VERSION (after verifying its checksums)."""
    from tandem.errors import TandemError
    from tandem.registry import Registry

    try:
        reg = Registry(uri)
        if expected is not None:
            reg.promote(kind, version, expected=expected)
        else:
            reg.promote(kind, version)
    except TandemError as e:
        raise _fail(e) from None
    typer.echo(f"{kind} current -> {version}")
