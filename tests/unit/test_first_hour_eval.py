"""``tandem eval`` as a new user meets it (issue 24): every missing or invalid option in one
error, the run file it writes named with its size, and whole table headers in a pipe.

A tiny in-test system over the 4 judged queries of ``tests/data/catalog``; nothing is indexed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem_app.cli import app
from tandem.eval import default_measures
from tandem.eval import systems as eval_systems
from tandem.retriever import Hit, Retriever

DATA = Path(__file__).resolve().parents[1] / "data" / "catalog"
JUDGED = ["--queries", str(DATA / "queries.tsv"), "--qrels", str(DATA / "qrels.txt")]


class _Fixed(Retriever):
    """The same three items for every query."""

    name = "fixed"

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        return [[Hit(doc, 1.0 / (rank + 1), self.name) for rank, doc in enumerate(["d1", "d2", "s1"][:k])]
                for _ in queries]


@pytest.fixture
def fixed_system(monkeypatch: pytest.MonkeyPatch) -> str:
    """``--system first-hour-fixed``, registered for one test only."""
    monkeypatch.setitem(eval_systems._SYSTEMS, "first-hour-fixed", lambda spec: _Fixed())
    return "first-hour-fixed"


def _invoke(args: list[str]) -> tuple[int, str]:
    # COLUMNS=80: what rich assumes in a pipe, whatever the terminal running the tests.
    result = CliRunner().invoke(app, ["eval", *args], env={"COLUMNS": "80"})
    return result.exit_code, result.output


def test_every_missing_option_is_reported_at_once() -> None:
    code, output = _invoke([])
    assert code == 2, output
    assert "4 problems" in output, output
    for option in ("--out", "--queries", "--qrels", "--system"):
        assert f"`{option}`" in output, (option, output)


def test_every_invalid_option_is_reported_at_once(tmp_path: Path) -> None:
    code, output = _invoke([
        "--system", "nope", "--system", "bm25", "--queries", str(tmp_path / "absent.tsv"),
        "--qrels", str(DATA / "qrels.txt"), "--out", str(tmp_path / "r.json"),
        "--robustness", "--suite", "typoo", "--field", "title=high",
    ])  # fmt: skip
    assert code == 2, output
    flat = " ".join(output.split())
    for expected in ("5 problems", "`system` 'nope' is unknown", "missing `--catalog`", "absent.tsv' is not a file",
                     "`--suite` 'typoo' is unknown", "`--field` 'title=high'"):
        assert expected in flat, (expected, output)
    assert not (tmp_path / "r.json").exists()


def test_the_run_file_is_named_with_its_size(tmp_path: Path, fixed_system: str) -> None:
    out = tmp_path / "report.json"
    code, output = _invoke(["--system", fixed_system, *JUDGED, "--out", str(out)])
    assert code == 0, output
    run_file = tmp_path / f"report.{fixed_system}.run"
    size = run_file.stat().st_size
    assert size > 0
    assert f"run file ({fixed_system}, top 1000 per query): {run_file} ({size} B)" in output, output
    assert json.loads(out.read_text())["run_files"] == {fixed_system: str(run_file)}


def test_table_headers_are_whole_in_a_pipe(tmp_path: Path, fixed_system: str) -> None:
    code, output = _invoke(["--system", fixed_system, "--run", str(DATA / "run_a.txt"), *JUDGED,
                            "--out", str(tmp_path / "report.json")])
    assert code == 0, output
    assert "…" not in output, output
    header = next(line for line in output.splitlines() if "system" in line and "┃" in line)
    cells = [c.strip() for c in header.strip("┃ ").split("┃")]
    assert cells == ["system", *default_measures(4)], header
    assert re.search(rf"│ {re.escape(fixed_system)} +│", output), output


def test_sizes_read_like_the_readme(tmp_path: Path) -> None:
    from tandem_app.cli.eval import _size

    for n, expected in ((57, "57 B"), (4_200, "4.2 kB"), (912_000, "912 kB"), (32_100_000, "32.1 MB")):
        path = tmp_path / f"{n}.run"
        with open(path, "wb") as f:
            f.truncate(n)  # sparse: only the size matters
        assert _size(path) == expected
