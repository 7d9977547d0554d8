"""The fusion holdout: training queries a v2 model never trains on, for fitting learned fusion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tandem.errors import InvalidInput
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.training import tree_run
from tandem.training.report import SUMMARY_FILE
from tandem.training.tree_run import HOLDOUT_KEY, fusion_holdout, read_fusion_holdout


def test_holdout_is_a_seeded_sample_of_judged_queries() -> None:
    queries = {f"q{i}": f"text {i}" for i in range(20)}
    qrels = {f"q{i}": {"t01": 4} for i in range(18)}  # q18, q19 unjudged
    a, b = fusion_holdout(queries, qrels, 0.25, 7), fusion_holdout(queries, qrels, 0.25, 7)
    assert a == b and len(a) == 4 and a <= set(qrels)  # round(18 * 0.25)
    assert fusion_holdout(queries, qrels, 0.0, 7) == set()
    with pytest.raises(InvalidInput, match="fusion_holdout"):
        tree_run.train_tree_from_files(Path("x"), Path("q"), Path("r"), Path("o"), "ci", overrides={"fusion_holdout": 0.9})


def test_training_never_sees_the_holdout_and_the_folder_names_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    items = tiny_catalog()
    (tmp_path / "items.jsonl").write_text("\n".join(it.model_dump_json() for it in items))
    names = [it.title.split()[-1].lower() for it in items[:10]]
    (tmp_path / "q.tsv").write_text("".join(f"q{i}\t{n}\n" for i, n in enumerate(names)))
    (tmp_path / "qrels.txt").write_text("".join(f"q{i} 0 {it.item_id} 4\n" for i, it in enumerate(items[:10])))
    seen: dict[str, Any] = {}

    def fake_train(items: Any, pairs: Any, out: Path, config: Any, *, holdout: Any = (), **_: Any) -> dict[str, Any]:
        seen["pairs"], seen["holdout"] = pairs, holdout
        return {}

    monkeypatch.setattr(tree_run, "train_tree", fake_train)
    tree_run.train_tree_from_files(tmp_path / "items.jsonl", tmp_path / "q.tsv", tmp_path / "qrels.txt",
                                   tmp_path / "model", "ci", overrides={"fusion_holdout": 0.4}, echo=lambda _m: None)
    held = seen["holdout"]
    assert len(held) == 4 and held == sorted(held)
    trained_texts = {q for q, _ in seen["pairs"]}
    assert len(seen["pairs"]) == 6 and not trained_texts & {names[int(q[1:])] for q in held}


def test_the_model_folder_names_its_holdout(tmp_path: Path) -> None:
    assert read_fusion_holdout(tmp_path) == set()  # no summary: no holdout
    (tmp_path / SUMMARY_FILE).write_text(json.dumps({HOLDOUT_KEY: ["q2", "q7"], "items": 3}))
    assert read_fusion_holdout(tmp_path) == {"q2", "q7"}
    (tmp_path / SUMMARY_FILE).write_text("not json")
    assert read_fusion_holdout(tmp_path) == set()


def test_fusion_queries_are_the_holdout_when_the_model_has_one() -> None:
    from tandem.fusion.fit import select_queries

    judged = [f"q{i}" for i in range(10)]
    assert select_queries(judged, {"q3", "q5", "zz"}, 100, 1) == ["q3", "q5"]
    assert select_queries(judged, set(), 100, 1) == sorted(judged)
    picked = select_queries(judged, set(), 4, 1)
    assert len(picked) == 4 and picked == select_queries(judged, set(), 4, 1) and set(picked) <= set(judged)
