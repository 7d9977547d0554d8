"""One ``tandem pipelines run base --local`` on the ``ci`` profile that several e2e tests start from.

The base pipeline (kfp.local, every step a subprocess) is the slowest thing the e2e tier does;
``test_pipeline_base_local`` checks what it produces and ``test_pipeline_adapter_local`` runs
the adapter pipeline on top of it, so the run is done once per session
(``tests/e2e/conftest.py``). Tests that write into the registry take a private copy
(:meth:`BaseRun.copy_to`; the registry keeps paths relative to its root).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tandem_testing.ci_adapter import jsonl
from tandem_testing.synthetic_catalog import synthetic_catalog

#: Synthetic items; the fresh ones are held out of the base for the adapter pipeline to find.
N_ITEMS = 300
#: Judged queries the fusion step fits on (of the model's 225 holdout queries). The tests check
#: that a learned fusion is fitted, published and served, not its quality: 48 queries (38 to fit,
#: 10 to select on) take the step ~18 s where 120 took ~25 s, for the same checks.
FUSION_MAX_QUERIES = 48


@dataclass(frozen=True)
class BaseRun:
    """Where the run lives (``root``), the pipeline parameters it ran with and its result."""

    root: Path
    params: dict[str, str]
    out: dict[str, Any]

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def runs(self) -> Path:
        """kfp.local's run folders (step outputs, logs and reports)."""
        return self.root / "runs"

    @property
    def catalog(self) -> Path:
        """The whole synthetic catalog, fresh items included (the base saw ``params["snapshot_uri"]``)."""
        return self.root / "catalog.jsonl"

    def copy_to(self, dest: Path) -> BaseRun:
        """A private copy under ``dest``, parameters pointing into it."""
        shutil.copytree(self.root, dest, dirs_exist_ok=True)
        params = {k: v.replace(str(self.root), str(dest)) for k, v in self.params.items()}
        return replace(self, root=dest, params=params)


def pipeline_args(pipeline: str, params: dict[str, Any], runs: Path) -> list[str]:
    """``tandem pipelines run PIPELINE --local`` arguments."""
    args = ["pipelines", "run", pipeline, "--local", "--root", str(runs)]
    for k, v in params.items():
        args += ["--param", f"{k}={v}"]
    return args


def run_pipeline(pipeline: str, params: dict[str, Any], runs: Path) -> dict[str, Any]:
    """Run a pipeline through the CLI; its closing JSON result (the run must succeed)."""
    from typer.testing import CliRunner

    from tandem_app.cli import app

    result = CliRunner().invoke(app, pipeline_args(pipeline, params, runs))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.output[result.output.rindex("\n{\n") + 1 :])  # the result closes the step logs


def run_base(root: Path) -> BaseRun:
    """The base pipeline on the synthetic catalog minus its fresh items (seed 13, fusion fitted on
    up to :data:`FUSION_MAX_QUERIES` queries), with ``TANDEM_HOME`` under ``root`` and one OpenMP thread."""
    from tandem.catalog.datasets import is_fresh
    from tandem.catalog.queries import write_queries

    data = synthetic_catalog(N_ITEMS)
    base = jsonl(root / "base.jsonl", [it for it in data.items if not is_fresh(it.item_id)])
    jsonl(root / "catalog.jsonl", data.items)
    write_queries(data.train_queries, root / "train.tsv")
    write_queries(data.dev_queries, root / "dev.tsv")
    for name, qrels in (("train.qrels", data.train_qrels), ("dev.qrels", data.dev_qrels)):
        (root / name).write_text("".join(f"{q} 0 {i} {g}\n" for q, rel in qrels.items() for i, g in rel.items()))
    params = {"snapshot_uri": str(base), "train_queries_uri": str(root / "train.tsv"),
              "train_qrels_uri": str(root / "train.qrels"), "dev_queries_uri": str(root / "dev.tsv"),
              "dev_qrels_uri": str(root / "dev.qrels"), "registry_uri": str(root / "registry"), "profile": "ci",
              "seed": "13", "fusion_max_queries": str(FUSION_MAX_QUERIES)}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TANDEM_HOME", str(root / "home"))
        mp.setenv("OMP_NUM_THREADS", "1")  # shared CI cores: spinning OpenMP peers slow training down
        out = run_pipeline("base", params, root / "runs")
    return BaseRun(root, params, out)
