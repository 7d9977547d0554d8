"""Pure-Python parts of tandem.sparse (no JVM): config validation, query rule, documents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tandem.catalog import Item
from tandem.errors import CorruptArtifact, NotFound
from tandem.sparse import IndexMeta, SparseConfig, truncate_query
from tandem.sparse.documents import to_document


def test_importing_tandem_sparse_does_not_start_the_jvm() -> None:
    code = "import sys, tandem.sparse, tandem_app.cli.index, tandem_app.cli.eval; assert 'jnius' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_defaults_are_anserinis() -> None:
    c = SparseConfig()
    assert (c.k1, c.b, c.fields, c.stemmer, c.keep_stopwords, c.rm3) == (0.9, 0.4, {"contents": 1.0}, "porter", False, False)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"k1": 0}, "k1"), ({"b": 1.5}, "b"), ({"fields": {}}, "fields"), ({"fields": {"price": 1.0}}, "fields"),
     ({"stemmer": "snowball"}, "stemmer"), ({"max_query_chars": 3}, "max_query_chars"), ({"nope": 1}, "nope")],
)  # fmt: skip
def test_bad_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SparseConfig(**kwargs)


def test_truncation_rule() -> None:
    assert truncate_query("short", 100) == "short"
    text = "word " * 400  # 2,000 characters
    out = truncate_query(text, 1000)
    assert len(out) < 1000 and not out.endswith(" ") and out.split()[-1] == "word"
    assert truncate_query("x" * 5000, 1000) == "x" * 1000  # no whitespace: hard cut


def test_document_mapping_keeps_every_field() -> None:
    item = Item(item_id="a", title="Drill", brand="Volta", category=["Tools", "Drills"],
                attributes={"v": "20V", "chuck": "1/2 in."}, description="Fast.", price=9.5, version=3)  # fmt: skip
    doc = to_document(item)
    assert doc == {
        "id": "a", "contents": "Drill Volta Tools Drills v 20V chuck 1/2 in. Fast.", "title": "Drill",
        "brand": "Volta", "category": "Tools > Drills", "attributes": "v: 20V; chuck: 1/2 in.",
        "description": "Fast.", "price": "9.5", "version": "3",
    }  # fmt: skip
    assert to_document(Item(item_id="b", title="Hose")) == {"id": "b", "contents": "Hose", "title": "Hose", "version": "0"}


def test_index_meta_versioning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(NotFound, match="build it first"):
        IndexMeta.load(tmp_path)
    meta = IndexMeta(index_id="x", stemmer="porter", keep_stopwords=False, store_docvectors=True,
                     fields=["title"], documents=1, built_at=0.0)  # fmt: skip
    meta.save(tmp_path)
    raw = json.loads((tmp_path / "tandem-index.json").read_text())
    raw["format_version"], raw["future_key"] = "1.7", 1
    (tmp_path / "tandem-index.json").write_text(json.dumps(raw))
    assert IndexMeta.load(tmp_path).index_id == "x"
    assert "future_key" in caplog.text
    raw["format_version"] = "2.0"
    (tmp_path / "tandem-index.json").write_text(json.dumps(raw))
    with pytest.raises(CorruptArtifact, match="format 2.0"):
        IndexMeta.load(tmp_path)
