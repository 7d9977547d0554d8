"""``tandem eval``: evaluate systems (retrievers or TREC run files) on a judged query set.

Writes a JSON report (``metrics`` keyed by ir-measures names), a per-query CSV, a PNG
comparing the systems, TREC run files of live systems, and paired significance tests of
every system against the first one.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from tandem.errors import InvalidInput


def _parse_fields(values: list[str] | None) -> dict[str, float] | None:
    from tandem.errors import InvalidInput

    if not values:
        return None
    fields: dict[str, float] = {}
    for v in values:
        name, sep, boost = v.partition("=")
        try:
            fields[name.strip()] = float(boost) if sep else 1.0
        except ValueError:
            raise InvalidInput(f"`--field` {v!r}: expected NAME=BOOST") from None
    return fields


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


#: Width of the stdout console in a pipe or a file: wide enough that rich never cuts a
#: table header to ``nDCG@…`` (it would use 80 columns there); tables still take only
#: the width they need.
PIPE_WIDTH = 1000


def _stdout_console() -> Console:
    """The console for results: the terminal's width on a TTY, :data:`PIPE_WIDTH` otherwise."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=PIPE_WIDTH)


def _size(path: Path) -> str:
    """``path``'s size for people: ``32.1 MB``, ``912 kB``, ``57 B``."""
    n = float(path.stat().st_size)
    for unit in ("B", "kB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" or n >= 100 else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _option_problems(*, out: Path | None, queries: Path | None, qrels: Path | None, system: list[str] | None,
                     run: list[Path] | None, catalog: Path | None, robustness: bool, suites: list[str],
                     field: list[str] | None) -> list[str]:
    """Every missing or invalid option of ``tandem eval`` at once (empty: all is well).

    Checked before anything is read or built, so a new user fixes the command line in one go
    instead of one error per try.
    """
    from tandem.errors import InvalidInput
    from tandem.eval import system_names
    from tandem.eval.robustness import SUITES

    problems = [f"missing `{opt}` ({what})" for opt, value, what in (
        ("--out", out, "the JSON report to write"),
        ("--queries", queries, "TSV `qid<TAB>text` or TREC topics"),
        ("--qrels", qrels, "TREC qrels `qid iter docid grade`"),
    ) if value is None]
    for opt, path in (("--queries", queries), ("--qrels", qrels), *(("--run", p) for p in run or [])):
        if path is not None and not path.is_file():
            problems.append(f"`{opt}` {str(path)!r} is not a file")
    if catalog is not None and not catalog.exists():  # a file, or a folder (anserini, parquet)
        problems.append(f"`--catalog` {str(catalog)!r} does not exist")
    if not system and not run:
        problems.append("give at least one `--system` or `--run`")
    known = system_names()
    problems += [f"`system` {name!r} is unknown; available: {', '.join(known)}"
                 for name in dict.fromkeys(system or []) if name not in known]
    if "bm25" in (system or []) and catalog is None:
        problems.append("missing `--catalog` (the catalog --system bm25 indexes)")
    if robustness and not system:
        problems.append("`--robustness` needs a `--system` (a run file cannot be re-run on perturbed queries)")
    problems += [f"`--suite` {s!r} is unknown; choose from {', '.join(SUITES)}" for s in suites if s not in SUITES]
    try:
        _parse_fields(field)
    except InvalidInput as e:
        problems.append(str(e))
    return problems


def _problems_error(problems: list[str]) -> InvalidInput:
    """One :class:`~tandem.errors.InvalidInput` listing every problem."""
    from tandem.errors import InvalidInput

    if len(problems) == 1:
        return InvalidInput(problems[0])
    listed = "\n".join(f"  - {p}" for p in problems)
    return InvalidInput(f"{len(problems)} problems with the options (see `tandem eval --help`):\n{listed}")


def eval_command(
    # --out, --queries and --qrels are required, but checked with the other options so that
    # every missing or invalid one is reported at once (click stops at the first).
    out: Annotated[Path | None, typer.Option("--out", help="JSON report to write (required).")] = None,
    queries: Annotated[Path | None, typer.Option(
        "--queries", help="Queries: TSV `qid<TAB>text` or TREC topics (required).")] = None,
    qrels: Annotated[Path | None, typer.Option("--qrels", help="TREC qrels `qid iter docid grade` (required).")] = None,
    system: Annotated[list[str] | None, typer.Option("--system", help="System to run (bm25, ...); repeatable.")] = None,
    run: Annotated[list[Path] | None, typer.Option("--run", help="TREC run file to evaluate; repeatable.")] = None,
    catalog: Annotated[Path | None, typer.Option("--catalog", help="Catalog the systems index.")] = None,
    format: Annotated[str | None, typer.Option("--format", help="Catalog format: jsonl, csv, parquet, anserini.")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Model directory (generative systems).")] = None,
    adapter: Annotated[Path | None, typer.Option(
        "--adapter", help="Adapter folder trained on --model (`tandem train adapter`): generative and hybrid "
                          "systems serve base + adapter.")] = None,
    rel: Annotated[int, typer.Option("--rel", help="Grade at or above which an item is relevant.")] = 4,
    k: Annotated[int, typer.Option("--k", help="Items retrieved per query.")] = 1000,
    measure: Annotated[list[str] | None, typer.Option("--measure", help="ir-measures name; repeatable (default: the official set).")] = None,
    k1: Annotated[float | None, typer.Option("--k1", help="BM25 k1.")] = None,
    b: Annotated[float | None, typer.Option("--b", help="BM25 b.")] = None,
    rm3: Annotated[bool, typer.Option("--rm3", help="BM25 + RM3 query expansion.")] = False,
    field: Annotated[list[str] | None, typer.Option("--field", help="BM25 field boost NAME=BOOST; repeatable.")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Rebuild cached indexes.")] = False,
    png: Annotated[Path | None, typer.Option("--png", help="Comparison plot (default: next to --out).")] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Per-query CSV (default: next to --out).")] = None,
    robustness: Annotated[bool, typer.Option("--robustness", help="Also run perturbed query sets (typo, word, "
                                             "sentence) and report RobustScore = perturbed / clean.")] = False,
    suite: Annotated[list[str] | None, typer.Option("--suite", help="Robustness suite (typo, word, sentence); "
                                                    "repeatable (default: all).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the robustness perturbations.")] = 0,
    intent_model: Annotated[Path | None, typer.Option(
        "--intent-model", help="hybrid: intent decomposer (`tandem intent fit`) for sub-intent retrieval.")] = None,
    fusion: Annotated[str | None, typer.Option(
        "--fusion", help="hybrid: auto (the gateway's rule), rrf, minmax, zscore or learned.")] = None,
    fusion_model: Annotated[Path | None, typer.Option(
        "--fusion-model", help="hybrid: LambdaMART fusion model (JSON) for --fusion learned/auto.")] = None,
    sources: Annotated[str | None, typer.Option(
        "--sources", help="hybrid: comma-separated sources (default bm25,generative; bm25 alone needs no model).")] = None,
    candidates: Annotated[int | None, typer.Option(
        "--candidates", min=1, help="hybrid: hits per source and intent handed to the fuser (default 100; "
        "use the depth the fusion model was trained at).")] = None,
    generative_depth: Annotated[int | None, typer.Option(
        "--generative-depth", min=1, help="hybrid: hits of the generative source per intent (default --candidates; "
        "use the depth the fusion model was trained at).")] = None,
) -> None:
    """Evaluate retrieval systems and/or run files with nDCG@10, R@10, R@100, RR@10, AP, P@30.

    System options (--k1, --b, --rm3, --field) apply to every --system; --intent-model,
    --fusion, --fusion-model and --sources choose the hybrid's intents and fusion as
    `tandem serve` does. To compare two settings, evaluate one and pass its written run
    file with --run to the other.
    --robustness re-runs every --system on perturbed copies of the queries (run files
    cannot be re-run, so they get no RobustScore).
    """
    import time

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from tandem.catalog import read_qrels, read_queries
    from tandem.config import get_settings
    from tandem.errors import TandemError
    from tandem.eval import (
        SystemSpec,
        build_system,
        default_measures,
        evaluate,
        paired_significance,
        plot_comparison,
        read_trec_run,
        run_retriever,
        write_per_query_csv,
        write_report,
        write_trec_run,
    )

    console = Console(stderr=True)
    try:
        from tandem.eval.robustness import SUITES, evaluate_robustness

        suites = list(suite or SUITES)
        if problems := _option_problems(out=out, queries=queries, qrels=qrels, system=system, run=run,
                                        catalog=catalog, robustness=robustness, suites=suites, field=field):
            raise _problems_error(problems)
        assert out is not None and queries is not None and qrels is not None  # checked above
        qs = read_queries(queries)
        out.parent.mkdir(parents=True, exist_ok=True)  # run files are written before the report
        judgements = read_qrels(qrels)
        names = list(measure or default_measures(rel))
        options: dict[str, Any] = {"rm3": rm3}
        if k1 is not None:
            options["k1"] = k1
        if b is not None:
            options["b"] = b
        if (fields := _parse_fields(field)) is not None:
            options["fields"] = fields
        for key, value in (("intent_model", intent_model), ("fusion", fusion), ("fusion_model", fusion_model),
                           ("sources", sources), ("adapter", adapter), ("candidates", candidates),
                           ("generative_depth", generative_depth)):
            if value is not None:
                options[key] = str(value)
        spec = SystemSpec(catalog=catalog, catalog_format=format, model=model, options=options,
                          home=get_settings().home, rebuild=rebuild)  # fmt: skip
        results: dict[str, Any] = {}
        timings: dict[str, float] = {}
        robust: dict[str, Any] = {}
        run_files: dict[str, Path] = {}
        for name in system or []:
            label = name if name not in results else f"{name}#{len(results) + 1}"
            retriever = build_system(name, spec)
            try:
                start = time.perf_counter()
                with Progress(console=console, transient=True) as progress:
                    task = progress.add_task(f"{label}: retrieving", total=len(qs))

                    def advance(n: int, t: Any = task) -> None:
                        progress.advance(t, n)

                    ranked = run_retriever(retriever, qs, k=k, progress=advance)
                timings[label] = time.perf_counter() - start
                if robustness:
                    with console.status(f"{label}: perturbed query sets"):
                        robust[label] = evaluate_robustness(
                            partial(run_retriever, retriever, k=k), qs, judgements, names, suites, seed,
                            clean_run=ranked)
            finally:
                retriever.close()
            run_files[label] = out.with_suffix(f".{label.replace('#', '-')}.run")
            write_trec_run(ranked, run_files[label], tag=name)
            results[label] = evaluate(ranked, judgements, names, queries=list(qs))
        for path in run or []:
            label = path.stem if path.stem not in results else f"{path.stem}#{len(results)}"
            results[label] = evaluate(read_trec_run(path), judgements, names, queries=list(qs))
        systems = list(results)
        significance = {
            f"{systems[0]} vs {other}": paired_significance(results[systems[0]], results[other], names)
            for other in systems[1:]
        }
        csv_path = csv or out.with_suffix(".per_query.csv")
        png_path = png or out.with_suffix(".png")
        report = write_report(
            out,
            results,
            significance,
            extra={
                "relevance_threshold": rel,
                "k": k,
                "query_file": str(queries),
                "qrels_file": str(qrels),
                "seconds": timings,
                "per_query_csv": str(csv_path),
                "plot": str(png_path),
                "run_files": {label: str(path) for label, path in run_files.items()},
                **({"robustness": {"seed": seed, "suites": suites, "systems": robust}} if robustness else {}),
            },
        )
        write_per_query_csv(csv_path, results)
        plot_comparison(png_path, results, title=f"{queries.name} ({report['queries']} queries)")
    except TandemError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None

    table = Table(title=f"{queries.name}: {report['queries']} judged queries")
    table.add_column("system")
    for n in names:
        table.add_column(n, justify="right")
    for name, res in results.items():
        table.add_row(name, *(f"{res.metrics[n]:.4f}" for n in names))
    stdout = _stdout_console()
    stdout.print(table)
    if robustness:
        rt = Table(title=f"RobustScore = perturbed / clean (seed {seed})")
        rt.add_column("system")
        rt.add_column("suite")
        for n in names:
            rt.add_column(n, justify="right")
        for label, res in robust.items():
            for s, fig in res["suites"].items():
                rt.add_row(label, s, *(_ratio(fig["robust_score"][n]) for n in names))
        stdout.print(rt)
    for pair, tests in significance.items():
        sig = ", ".join(f"{t.measure} Δ{t.delta:+.4f} (p={t.randomisation_p_value:.3g})" for t in tests[:4])
        stdout.print(f"{pair}: {sig}")
    stdout.print(f"report: {out}  per-query: {csv_path}  plot: {png_path}", soft_wrap=True)
    for label, path in run_files.items():
        stdout.print(f"run file ({label}, top {k} per query): {path} ({_size(path)})", soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Attach ``tandem eval`` as a top-level command."""
    app.command("eval")(eval_command)
