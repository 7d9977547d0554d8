"""A sparse server started before ingest has written its index serves UNAVAILABLE, then the index."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tandem.errors import Unavailable
from tandem.sparse.config import META_FILE
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem_services.awaited import AwaitedIndex


def test_unavailable_naming_the_index_until_it_exists_then_served(tmp_path: Path) -> None:
    index = tmp_path / "indexes" / "sparse"
    opened: list[TermOverlapRetriever] = []

    def open_index() -> TermOverlapRetriever:
        opened.append(TermOverlapRetriever(tiny_catalog(), name="x", version="7"))
        return opened[-1]

    source = AwaitedIndex(index, open_index, poll_s=0.05)
    try:
        with pytest.raises(Unavailable, match=f"BM25 index {index} does not exist yet"):
            source.retrieve(["drill"], 3)
        assert source.version() == "awaiting-index" and source.refreshable and not source.refresh()
        index.mkdir(parents=True)
        (index / META_FILE).write_text("{}")  # what the writer moves into place last
        deadline = time.monotonic() + 5
        while source.version() == "awaiting-index":
            assert time.monotonic() < deadline, "the index was not picked up within 5 s"
            time.sleep(0.02)
        assert source.version() == "7" and source.retrieve(["drill"], 3)[0]
        assert len(opened) == 1 and opened[0].name == "bm25"
    finally:
        source.close()
