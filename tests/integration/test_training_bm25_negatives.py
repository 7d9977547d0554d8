"""BM25-hard negatives from a real Lucene index over the tiny catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.errors import InvalidInput
from tandem_testing.tiny_catalog import tiny_catalog
from tandem.training.negatives import bm25_run

pytestmark = pytest.mark.integration


def test_bm25_run_ranks_the_matching_item_first(java_home: object, tmp_path: Path) -> None:
    run = bm25_run(tiny_catalog(), ["garden hose", "garden hose", "cordless drill"], k=5, index_dir=tmp_path / "idx")
    assert set(run) == {"garden hose", "cordless drill"}  # one entry per distinct query
    assert run["garden hose"][0] == "t18"
    assert all(1 <= len(ids) <= 5 for ids in run.values())


def test_bm25_run_refuses_k_below_one(java_home: object, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="`k`"):
        bm25_run(tiny_catalog(), ["garden hose"], k=0, index_dir=tmp_path / "idx")
