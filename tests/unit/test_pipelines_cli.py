"""``tandem pipelines``: compile to a folder, refusals of ``run`` and ``schedule``, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from tandem_app.cli import app


def test_compile_writes_both_pipelines(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["pipelines", "compile", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "base.yaml").read_text())["pipelineInfo"]["name"] == "tandem-base"
    assert yaml.safe_load((tmp_path / "adapter.yaml").read_text())["pipelineInfo"]["name"] == "tandem-adapter"


def test_run_refuses_unknown_pipelines_missing_parameters_and_remote_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["pipelines", "run", "nightly", "--local", "--root", str(tmp_path)])
    assert result.exit_code == 2 and "`pipeline`" in result.output
    result = CliRunner().invoke(app, ["pipelines", "run", "adapter", "--local", "--root", str(tmp_path)])
    assert result.exit_code == 2 and "catalog_uri" in result.output
    result = CliRunner().invoke(app, ["pipelines", "run", "base"])
    assert result.exit_code == 2 and "`--local`" in result.output


def test_run_refuses_unknown_parameters(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["pipelines", "run", "base", "--local", "--root", str(tmp_path),
                                      "--param", "snapshot=x"])
    assert result.exit_code == 2 and "`--param` snapshot" in " ".join(result.output.split())


def test_core_cli_does_not_import_the_pipelines_package() -> None:
    code = "import sys, tandem_app.cli; print('tandem_pipelines' in sys.modules, 'kfp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
