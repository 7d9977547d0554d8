"""Corrective samples of a failed-query cycle as the (query, item id) pairs the hourly adapter
takes (issue 22 item 2; the adapter training itself: tests/integration/test_failed_adapter.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tandem.errors import CorruptArtifact
from tandem.failed.cycle import corrective_pairs


def test_corrective_pairs_read_a_cycle_folder_and_name_a_bad_line(tmp_path: Path) -> None:
    (tmp_path / "samples.jsonl").write_text(
        json.dumps({"query": "cordles dril", "item_ids": ["t01", "t02", "t05", "t07"], "kind": "misspelling"}) + "\n\n"
        + json.dumps({"query": "sawz", "item_ids": ["t08"], "kind": "vocabulary_gap"}) + "\n")
    assert corrective_pairs(tmp_path, per_query=2) == [("cordles dril", "t01"), ("cordles dril", "t02"),
                                                       ("sawz", "t08")]
    (tmp_path / "samples.jsonl").write_text('{"query": "x", "item_ids": "t01"}\n')
    with pytest.raises(CorruptArtifact, match="samples.jsonl:1"):
        corrective_pairs(tmp_path)
