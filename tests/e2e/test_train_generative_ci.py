"""``tandem train generative --profile ci --architecture t5`` (the v1 T5, kept for comparison)
end to end on the synthetic ci catalog, then retrieval. The v2 default has its own tests
(``test_train_tree_ci.py``).

Pins the ci figures: memorisation exact-match >= 0.9 and dev R@10 as a golden figure
(deterministic seed; the tolerance absorbs thread-count and CPU-kernel differences).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.catalog.queries import write_queries
from tandem_app.cli import app
from tandem_testing.synthetic_catalog import synthetic_catalog

pytestmark = pytest.mark.e2e

N_ITEMS = 300
#: Measured with this seed on the 2-core build machine (see the report of issue 5).
GOLDEN_DEV_R10 = 0.957
TOLERANCE = 0.04


def _write(data_dir: Path) -> tuple[Path, Path, Path, dict[str, str], dict[str, dict[str, int]]]:
    s = synthetic_catalog(N_ITEMS)
    data_dir.mkdir()
    catalog = data_dir / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(it.model_dump(exclude_none=True)) + "\n" for it in s.items))
    queries, qrels = data_dir / "queries.train.tsv", data_dir / "qrels.train.txt"
    write_queries(s.train_queries, queries)
    qrels.write_text("".join(f"{q} 0 {i} {g}\n" for q, rel in s.train_qrels.items() for i, g in rel.items()))
    return catalog, queries, qrels, s.dev_queries, s.dev_qrels


def test_ci_profile_memorises_and_retrieves(tmp_path: Path) -> None:
    from tandem.eval import evaluate, run_retriever
    from tandem.generative.retriever import GenerativeRetriever

    catalog, queries, qrels, dev_queries, dev_qrels = _write(tmp_path / "data")
    out = tmp_path / "model"
    args = ["train", "generative", "--profile", "ci", "--catalog", str(catalog), "--train-queries", str(queries),
            "--train-qrels", str(qrels), "--out", str(out), "--seed", "13", "--device", "cpu", "--no-progress",
            "--set", "threads=1", "--architecture", "t5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "memorise" in result.output and "exact-match" in result.output

    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["memorisation_reached_target"], summary["stages"]["memorise"]
    assert summary["stages"]["memorise"]["memorisation"]["exact_match"] >= 0.9
    assert summary["final_memorisation"]["exact_match"] >= 0.9  # alignment kept the memory
    assert (out / "training_curve.png").is_file()

    retriever = GenerativeRetriever(out, num_beams=10)
    run = run_retriever(retriever, dev_queries, k=10)
    r10 = evaluate(run, dev_qrels, ["R(rel=4)@10"]).metrics["R(rel=4)@10"]
    random_r10 = 10 / N_ITEMS
    assert r10 > 10 * random_r10
    assert r10 == pytest.approx(GOLDEN_DEV_R10, abs=TOLERANCE)

    # Resuming a finished run retrains nothing and rewrites the same model.
    before = (out / "model.safetensors").read_bytes()
    again = CliRunner().invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert (out / "model.safetensors").read_bytes() == before


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    catalog, queries, qrels, _, _ = _write(tmp_path / "data")
    base = ["train", "generative", "--catalog", str(catalog), "--train-queries", str(queries),
            "--train-qrels", str(qrels), "--out", str(tmp_path / "m")]
    bad_profile = CliRunner().invoke(app, [*base, "--profile", "huge"])
    assert bad_profile.exit_code == 2 and "`profile`" in bad_profile.output
    bad_set = CliRunner().invoke(app, [*base, "--set", "alpha=3"])
    assert bad_set.exit_code == 2 and "alpha" in bad_set.output
    missing = CliRunner().invoke(app, [*base[:2], "--catalog", str(catalog), "--train-queries",
                                       str(tmp_path / "nope.tsv"), "--train-qrels", str(qrels), "--out", "x"])
    assert missing.exit_code == 2 and "`queries`" in missing.output
