"""``tandem ids build|assign|stats``: semantic IDs for a catalog.

``build`` clusters a JSONL catalog into hierarchical IDs and saves the map; ``assign``
gives new items IDs from the reserved space (existing IDs never change); ``stats``
prints the codebook health table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Semantic IDs: build, assign new items, stats.", no_args_is_help=True)


def _read_jsonl(path: Path) -> list[Any]:
    """Items from a JSONL file (one item object per line; blank lines skipped)."""
    from tandem.catalog.item import Item
    from tandem.errors import InvalidInput

    items = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                items.append(Item(**json.loads(line)))
            except (ValueError, TypeError) as exc:
                raise InvalidInput(f"`catalog` {path}:{n}: not a valid item ({exc})") from exc
    return items


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


def _print_stats(stats: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("pos", "kind", "codes", "nodes", "utilisation", "entropy bits", "entropy ratio",
                "largest", "mean"):
        table.add_column(col, justify="right" if col not in ("kind",) else "left")
    for lv in stats["levels"]:
        table.add_row(str(lv["position"]), lv["kind"], str(lv["code_space"]), str(lv["nodes"]),
                      f"{lv['utilisation']:.3f}", f"{lv['entropy_bits']:.2f}", f"{lv['entropy_ratio']:.3f}",
                      str(lv["largest_cluster"]), f"{lv['mean_cluster']:.2f}")
    console = Console(width=120)
    console.print(table)
    console.print(f"items {stats['items']}  depth {stats['depth']}  version {stats['version']}  "
                  f"leaves {stats['leaves']}  collisions before suffix {stats['collisions_before_suffix']}  "
                  f"largest leaf {stats['largest_leaf']}  free suffix slots {stats['free_suffix_slots']}")


@app.command("build")
def build(
    catalog: Annotated[Path, typer.Argument(help="Catalog JSONL (one tandem Item per line).", exists=True,
                                            dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Directory to write the ID map to.")],
    levels: Annotated[int, typer.Option(help="Cluster levels (the suffix comes on top).")] = 3,
    branching: Annotated[int, typer.Option(help="Most codes per node on semantic levels.")] = 32,
    leaf_capacity: Annotated[int, typer.Option(help="Suffix codes per leaf.")] = 32,
    reserved: Annotated[int, typer.Option(help="Suffix codes per leaf kept free for new items.")] = 4,
    dim: Annotated[int, typer.Option(help="TF-IDF + SVD embedding dimension.")] = 96,
    categories: Annotated[bool, typer.Option(help="Use category paths as the top level.")] = True,
    embedder_path: Annotated[str | None, typer.Option(
        help="A local sentence-transformers model directory instead of TF-IDF.")] = None,
    seed: Annotated[int, typer.Option(help="Seed: same catalog + seed = same IDs.")] = 0,
) -> None:
    """Build semantic IDs for CATALOG and save the map to --out."""
    from pydantic import ValidationError
    from rich.console import Console

    from tandem.errors import TandemError
    from tandem.ids import EmbedderConfig, SemanticIdConfig, build_semantic_ids

    try:
        emb = (EmbedderConfig(kind="sentence-transformers", model_path=embedder_path) if embedder_path
               else EmbedderConfig(dim=dim))
        cfg = SemanticIdConfig(levels=levels, branching=branching, leaf_capacity=leaf_capacity,
                               reserved_per_leaf=reserved, use_categories=categories, seed=seed, embedder=emb)
    except ValidationError as exc:
        raise _fail(exc) from None
    console = Console(stderr=True)
    try:
        with console.status(f"reading {catalog}"):
            items = _read_jsonl(catalog)
        started = time.perf_counter()
        with console.status(f"clustering {len(items)} items ({levels} levels x {branching})"):
            idmap = build_semantic_ids(items, cfg)
        took = time.perf_counter() - started
        idmap.save(str(out))
    except TandemError as exc:
        raise _fail(exc) from None
    _print_stats(idmap.stats(), f"tandem ids build: {len(idmap)} items in {took:.1f}s -> {out}")


@app.command("assign")
def assign(
    idmap_dir: Annotated[Path, typer.Argument(help="ID map directory (from `tandem ids build`).")],
    catalog: Annotated[Path, typer.Argument(help="JSONL of items to assign (known ones keep their ID).",
                                            exists=True, dir_okay=False)],
    out: Annotated[Path | None, typer.Option(
        help="Write the updated map here instead of in place.")] = None,
) -> None:
    """Give new items of CATALOG IDs from the reserved space; existing IDs never change."""
    from tandem.errors import TandemError
    from tandem.ids import IdMap

    try:
        idmap = IdMap.load(str(idmap_dir))
        items = _read_jsonl(catalog)
        known = sum(1 for it in items if it.item_id in idmap)
        before = idmap.free_slots()
        idmap.assign(items)
        idmap.save(str(out or idmap_dir))
    except TandemError as exc:
        raise _fail(exc) from None
    typer.echo(f"assigned {len(items) - known} new item(s), {known} already had IDs; "
               f"map version {idmap.version}, {len(idmap)} items, free suffix slots {before} -> {idmap.free_slots()}")


@app.command("stats")
def stats(
    idmap_dir: Annotated[Path, typer.Argument(help="ID map directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Codebook health per position: utilisation, entropy, largest cluster, collisions."""
    from tandem.errors import TandemError
    from tandem.ids import IdMap

    try:
        st = IdMap.load(str(idmap_dir)).stats()
    except TandemError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(st, indent=2))
    else:
        _print_stats(st, f"tandem ids stats: {idmap_dir}")
