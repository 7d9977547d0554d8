"""The pipeline's training-data preparation: pseudo-query files the trainer reads back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tandem.errors import CorruptArtifact
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.training.prepare import PSEUDO_FILE, RUN_FILE, prepare_training_data, read_bm25_run, read_pseudo_queries
from tandem.training.pseudo import template_queries


def test_pseudo_queries_are_written_per_item_and_read_back(tmp_path: Path) -> None:
    items = tiny_catalog()
    summary = prepare_training_data(items, ["garden hose"], 3, 13, tmp_path, bm25=False)
    back = read_pseudo_queries(tmp_path / PSEUDO_FILE)
    assert list(back) == [it.item_id for it in items]
    assert back[items[0].item_id] == template_queries(items[0], 3, 13)
    assert summary["pseudo_queries"] == sum(map(len, back.values())) > 0 and summary["bm25_queries"] == 0
    assert not (tmp_path / RUN_FILE).exists()


def test_profiles_without_pseudo_queries_write_empty_lists(tmp_path: Path) -> None:
    prepare_training_data(tiny_catalog(), [], 0, 13, tmp_path, bm25=False)
    assert all(qs == [] for qs in read_pseudo_queries(tmp_path / PSEUDO_FILE).values())


def test_damaged_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / PSEUDO_FILE).write_text('{"item_id": "a"}\n')
    with pytest.raises(CorruptArtifact, match="line 1"):
        read_pseudo_queries(tmp_path / PSEUDO_FILE)
    (tmp_path / RUN_FILE).write_text(json.dumps({"q": "not a list"}))
    with pytest.raises(CorruptArtifact, match="mapping"):
        read_bm25_run(tmp_path / RUN_FILE)
