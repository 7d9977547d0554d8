"""Compiling the pipelines and keeping their recurring runs on a KFP server, idempotently.

KFP's API has no "update recurring run", and nothing stops two recurring runs with the
same name. So :func:`ensure_recurring_run` looks recurring runs up by display name and
compares a fingerprint of what would be scheduled (pipeline YAML, cron, parameters) kept
in the description: equal → left alone; different → the new one is created first, then
the old ones deleted (never a window with no schedule, never two left behind).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PIPELINES_DIR = Path(__file__).resolve().parent.parent
COMPILED_DIR = PIPELINES_DIR / "compiled"
EXPERIMENT = "tandem"


@dataclass(frozen=True)
class Schedule:
    """One recurring run: which compiled pipeline, when, with which parameters."""

    name: str
    pipeline: str
    cron: str
    params: dict[str, Any]


#: What ``tandem pipelines schedule`` keeps on the server: the monthly base, the hourly adapters.
SCHEDULES = {"base": Schedule("tandem-base-monthly", "base", "0 0 1 * *", {}),
             "adapter": Schedule("tandem-adapter-hourly", "adapter", "0 * * * *", {})}


def compile_pipelines(out_dir: Path = COMPILED_DIR) -> list[Path]:
    """Write the IR YAML of every pipeline under ``out_dir``; returns the files written."""
    from kfp import compiler

    from tandem_pipelines.adapter import adapter_pipeline
    from tandem_pipelines.base import base_pipeline
    from tandem_pipelines.merge_step import merge_pipeline

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, pipeline in (("base", base_pipeline), ("adapter", adapter_pipeline), ("merge", merge_pipeline)):
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(pipeline, str(path))
        written.append(path)
    return written


def fingerprint(package: Path, cron: str, params: dict[str, Any]) -> str:
    """sha256 over the pipeline YAML, the cron and the parameters (what makes a schedule differ)."""
    h = hashlib.sha256(package.read_bytes())
    h.update(cron.encode())
    h.update(json.dumps(params, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _find_by_name(client: Any, experiment_id: str, name: str) -> list[Any]:
    """Every recurring run of the experiment whose display name is ``name`` (all pages)."""
    flt = json.dumps({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": name}]})
    found, token = [], ""
    while True:
        resp = client.list_recurring_runs(page_token=token, page_size=100, experiment_id=experiment_id, filter=flt)
        # The server filters, but an old one may ignore `filter`; check the names ourselves.
        found += [r for r in (resp.recurring_runs or []) if r.display_name == name]
        token = resp.next_page_token or ""
        if not token:
            return found


def _check_params(package: Path, params: dict[str, Any]) -> None:
    """:class:`InvalidInput` for an unknown or missing required parameter: the server would
    accept the schedule and every run it starts would then fail."""
    from kfp import components

    from tandem.errors import InvalidInput

    inputs = components.load_component_from_file(str(package)).component_spec.inputs or {}
    unknown = sorted(set(params) - set(inputs))
    missing = sorted(k for k, spec in inputs.items() if not spec.optional and k not in params)
    if unknown:
        raise InvalidInput(f"`params` {', '.join(unknown)}: not parameters of {package.name}")
    if missing:
        raise InvalidInput(f"`params` lacks required {', '.join(missing)} of {package.name}")


def ensure_recurring_run(client: Any, schedule: Schedule, package: Path, params: dict[str, Any] | None = None,
                         experiment: str = EXPERIMENT) -> tuple[str, str]:
    """Make ``client``'s server hold exactly one recurring run named ``schedule.name`` for
    ``package``; returns (``created`` | ``replaced`` | ``unchanged``, recurring run id).

    ``client`` is a :class:`kfp.Client`.
    """
    from tandem.errors import InvalidInput

    if not package.is_file():
        raise InvalidInput(f"`package` {package} does not exist; run `tandem pipelines compile` first")
    merged = {**schedule.params, **(params or {})}
    _check_params(package, merged)
    marker = f"fingerprint={fingerprint(package, schedule.cron, merged)}"
    exp = client.create_experiment(name=experiment)  # returns the existing one when present
    existing = _find_by_name(client, exp.experiment_id, schedule.name)
    if len(existing) == 1 and marker in (existing[0].description or ""):
        return "unchanged", existing[0].recurring_run_id
    new = client.create_recurring_run(
        experiment_id=exp.experiment_id, job_name=schedule.name,
        description=f"Tandem {schedule.pipeline} pipeline, cron {schedule.cron}; {marker}",
        cron_expression=schedule.cron, max_concurrency=1, no_catchup=True, params=merged,
        pipeline_package_path=str(package), enabled=True,
    )  # fmt: skip
    for old in existing:
        client.delete_recurring_run(recurring_run_id=old.recurring_run_id)
    return ("replaced" if existing else "created"), new.recurring_run_id
