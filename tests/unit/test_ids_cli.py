"""``tandem ids build|assign|stats`` end to end on a small JSONL catalog."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tandem_app.cli import app
from tandem.ids import IdMap

KINDS = ["cordless drill", "led bulb", "garden hose", "paint roller", "toilet seat", "door hinge"]


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _rows(start: int, n: int) -> list[dict[str, object]]:
    return [{"item_id": str(i), "title": f"Brand{i % 5} {KINDS[i % 6]} size {i % 7} &amp; more"}
            for i in range(start, start + n)]


def test_build_assign_stats(tmp_path: Path) -> None:
    runner = CliRunner()
    cat = _write(tmp_path / "cat.jsonl", _rows(0, 120))
    out = tmp_path / "ids"
    res = runner.invoke(app, ["ids", "build", str(cat), "--out", str(out), "--levels", "2", "--branching", "4",
                              "--leaf-capacity", "16", "--reserved", "4", "--dim", "8"])
    assert res.exit_code == 0, res.output
    assert "120 items" in res.output and "suffix" in res.output
    base = IdMap.load(str(out))
    assert len(base) == 120 and base.version == 1

    new = _write(tmp_path / "new.jsonl", _rows(110, 20))  # 10 known, 10 new
    res = runner.invoke(app, ["ids", "assign", str(out), str(new)])
    assert res.exit_code == 0, res.output
    assert "assigned 10 new item(s), 10 already had IDs; map version 2" in res.output
    after = IdMap.load(str(out))
    assert len(after) == 130
    assert all(after.codes(str(i)) == base.codes(str(i)) for i in range(120))

    res = runner.invoke(app, ["ids", "stats", str(out), "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    assert st["items"] == 130 and st["version"] == 2 and len(st["levels"]) == 3


def test_clear_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    cat = _write(tmp_path / "cat.jsonl", _rows(0, 10))
    res = runner.invoke(app, ["ids", "build", str(cat), "--out", str(tmp_path / "x"), "--branching", "64"])
    assert res.exit_code == 2 and "`branching` (64) is larger than the catalog (10 items)" in res.output
    dup = _write(tmp_path / "dup.jsonl", _rows(0, 5) + _rows(0, 1))
    res = runner.invoke(app, ["ids", "build", str(dup), "--out", str(tmp_path / "y"), "--branching", "2"])
    assert res.exit_code == 2 and "duplicate item_id '0'" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"item_id": "1"}\n')
    res = runner.invoke(app, ["ids", "build", str(bad), "--out", str(tmp_path / "z")])
    assert res.exit_code == 2 and "bad.jsonl:1" in res.output
    res = runner.invoke(app, ["ids", "stats", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "not an ID map directory" in res.output
