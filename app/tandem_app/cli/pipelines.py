"""``tandem pipelines compile|schedule|run``: the Kubeflow pipelines of :mod:`tandem_pipelines`.

``tandem_pipelines`` and kfp are imported inside the commands: the core never depends on
the pipelines package at import time, and ``tandem --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Kubeflow pipelines: compile to IR YAML, schedule on a KFP server, run locally.",
                  no_args_is_help=True)  # fmt: skip


def _fail(e: Exception) -> typer.Exit:
    from rich.console import Console

    Console(stderr=True).print(f"[red]error:[/red] {e}")
    return typer.Exit(2)


def _params(values: list[str]) -> dict[str, object]:
    """``--param KEY=VALUE`` options as pipeline parameters."""
    from tandem_app.cli._options import key_values

    return key_values(values, "--param")


Param = Annotated[list[str] | None, typer.Option("--param", "-p", help="Pipeline parameter KEY=VALUE (repeatable).")]


@app.command("compile")
def compile_(
    out: Annotated[Path | None, typer.Option(help="Folder for the YAML (default: pipelines/compiled).")] = None,
) -> None:
    """Write the pipelines' IR YAML (``base.yaml``, ``adapter.yaml``) for upload to Kubeflow Pipelines."""
    from tandem_pipelines.schedule import COMPILED_DIR, compile_pipelines

    for path in compile_pipelines(out or COMPILED_DIR):
        typer.echo(f"wrote {path}")


@app.command("schedule")
def schedule(
    host: Annotated[str, typer.Option("--host", help="KFP API endpoint, e.g. http://ml-pipeline.kubeflow:8888.")],
    pipeline: Annotated[str, typer.Argument(help="Which schedule: base (monthly) or adapter (hourly).")] = "base",
    param: Param = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment holding the recurring runs.")] = "tandem",
    namespace: Annotated[str | None, typer.Option(help="Kubeflow namespace (multi-user deployments).")] = None,
) -> None:
    """Create or update the recurring run (base ``0 0 1 * *``, adapter ``0 * * * *``), never adding a second one."""
    from tandem.errors import TandemError

    try:
        import kfp

        from tandem_pipelines.schedule import COMPILED_DIR, SCHEDULES, ensure_recurring_run

        if pipeline not in SCHEDULES:
            raise typer.BadParameter(f"`pipeline` must be one of {', '.join(SCHEDULES)}")
        sched = SCHEDULES[pipeline]
        client = kfp.Client(host=host, namespace=namespace)
        action, rid = ensure_recurring_run(client, sched, COMPILED_DIR / f"{sched.pipeline}.yaml",
                                           _params(param or []), experiment)
    except TandemError as e:
        raise _fail(e) from None
    typer.echo(f"{sched.name}: {action} (recurring run {rid}, cron {sched.cron})")


@app.command("run")
def run(
    pipeline: Annotated[str, typer.Argument(help="Which pipeline: base, adapter or merge (the monthly base from the previous one).")],
    local: Annotated[bool, typer.Option("--local", help="Run with kfp.local in this environment (required).")] = False,
    param: Param = None,
    root: Annotated[Path | None, typer.Option(help="Pipeline root (default: <home>/pipeline-runs).")] = None,
) -> None:
    """Run a pipeline on this machine with ``kfp.local`` (``SubprocessRunner``, current environment)."""
    from tandem.errors import TandemError

    if not local:
        raise _fail(ValueError("`--local` is required: cluster runs go through `tandem pipelines schedule`"))
    try:
        from tandem_pipelines.local import run_local

        result = run_local(pipeline, _params(param or []), root)
    except TandemError as e:
        raise _fail(e) from None
    typer.echo(json.dumps(result, indent=2))
