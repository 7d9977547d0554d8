"""BM25 retriever on a real Lucene index: contract, fields, live updates, bad input, CLI."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.catalog import Item, load_items
from tandem.errors import InvalidInput, Unavailable
from tandem_testing.retriever_contract import RetrieverContract

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "catalog"


@pytest.fixture(scope="module")
def items(java_home: object) -> list[Item]:
    return load_items(DATA / "products.jsonl").items


@pytest.fixture(scope="module")
def built_index(items: list[Item], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tandem.sparse import build_index

    index_dir = tmp_path_factory.mktemp("bm25") / "index"
    stats = build_index(items, index_dir)
    assert stats.documents == len(items) == 12
    return index_dir


@pytest.fixture(scope="module")
def reader(built_index: Path) -> Iterator[object]:
    from tandem.sparse import SparseRetriever

    with SparseRetriever(built_index, writable=False) as r:
        yield r


@pytest.fixture
def writable(items: list[Item], tmp_path: Path) -> Iterator[object]:
    """A private, writable index per test (updates must not leak between tests)."""
    from tandem.sparse import SparseRetriever, build_index

    build_index(items, tmp_path / "index")
    with SparseRetriever(tmp_path / "index") as r:
        yield r


class TestBm25Contract(RetrieverContract):
    EXPECTED = {"cordless drill": "d1", "garden hose": "h1", "kitchen faucet": "f1", "paint roller": "p2"}

    @pytest.fixture
    def retriever(self, reader: object) -> object:
        return reader


def test_golden_ranking_on_the_tiny_catalog(reader) -> None:  # type: ignore[no-untyped-def]
    # Pinned BM25 (k1=0.9, b=0.4, Porter) figures: the shorter title wins "drill"; "100"
    # also matches the screws' "100 Pack" (contents holds every field, category included).
    [drill, hose] = reader.retrieve(["drill", "garden hose 100 ft"], 10)
    assert [(h.item_id, round(h.score, 4)) for h in drill] == [("d2", 1.151), ("d1", 1.0777)]
    assert [(h.item_id, round(h.score, 4)) for h in hose] == [("h2", 3.9257), ("h1", 3.0286), ("w1", 0.8543)]


def test_field_boosts_choose_what_matches(built_index: Path) -> None:
    from tandem.sparse import SparseConfig, SparseRetriever

    with SparseRetriever(built_index, SparseConfig(fields={"title": 1.0}), writable=False) as titles_only:
        assert titles_only.retrieve(["volta"], 5) == [[]]  # the brand is not in any title
        assert [h.item_id for h in titles_only.retrieve(["drill"], 5)[0]] == ["d2", "d1"]
    with SparseRetriever(built_index, SparseConfig(fields={"title": 1.0, "brand": 5.0}), writable=False) as boosted:
        assert [h.item_id for h in boosted.retrieve(["volta"], 5)[0]] == ["d1"]
        # A brand match now outweighs a title match: Brackett's drill (d2) leads for "brackett drill".
        assert boosted.retrieve(["brackett drill"], 5)[0][0].item_id == "d2"
    with SparseRetriever(built_index, SparseConfig(fields={"description": 1.0}), writable=False) as desc:
        assert [h.item_id for h in desc.retrieve(["lumber"], 5)[0]] == ["s1"]


def test_rm3_runs_and_keeps_the_contract(built_index: Path) -> None:
    from tandem.sparse import SparseConfig, SparseRetriever

    with SparseRetriever(built_index, SparseConfig(rm3=True, rm3_fb_docs=2), writable=False) as r:
        hits = r.retrieve(["garden hose"], 5)[0]
        assert {"h1", "h2"} <= {h.item_id for h in hits}
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)


def test_stored_titles_and_documents(reader) -> None:  # type: ignore[no-untyped-def]
    assert reader.titles(["d1", "missing"]) == {"d1": "Cordless Drill 20V Lithium-Ion Kit"}
    doc = reader.documents(["d1"])["d1"]
    assert doc["brand"] == "Volta" and doc["category"] == "Tools > Power Tools > Drills"


def test_upsert_is_visible_immediately(writable) -> None:  # type: ignore[no-untyped-def]
    before = writable.stats()
    version = writable.version()
    start = time.perf_counter()
    writable.upsert([Item(item_id="n1", title="Quokka Sprinkler Timer")])
    hits = writable.retrieve(["quokka"], 5)[0]
    assert time.perf_counter() - start < 1.0
    assert [h.item_id for h in hits] == ["n1"]
    assert writable.stats().documents == before.documents + 1
    assert writable.version() != version


def test_title_change_replaces_old_terms(writable) -> None:  # type: ignore[no-untyped-def]
    writable.upsert([Item(item_id="d1", title="Quokka Lantern")])
    assert writable.retrieve(["lithium"], 5) == [[]]
    assert [h.item_id for h in writable.retrieve(["drill"], 5)[0]] == ["d2"]
    assert [h.item_id for h in writable.retrieve(["lantern"], 5)[0]] == ["d1"]
    assert writable.stats().documents == 12  # replaced, not added
    assert writable.titles(["d1"]) == {"d1": "Quokka Lantern"}


def test_delete_removes_and_counts(writable) -> None:  # type: ignore[no-untyped-def]
    assert writable.delete(["h1", "not-there"]) == 2
    assert [h.item_id for h in writable.retrieve(["garden hose"], 5)[0]] == ["h2"]
    assert writable.stats().documents == 11
    assert writable.titles(["h1"]) == {}
    writable.upsert([Item(item_id="h1", title="Garden Hose Reel")])
    assert writable.stats().documents == 12


def test_updates_survive_reopening(writable) -> None:  # type: ignore[no-untyped-def]
    from tandem.sparse import SparseRetriever

    writable.upsert([Item(item_id="n2", title="Wombat Gutter Guard")])
    with SparseRetriever(writable.index_dir, writable=False) as other:
        assert [h.item_id for h in other.retrieve(["wombat"], 3)[0]] == ["n2"]
        writable.delete(["n2"])
        assert other.refresh() is True
        assert other.retrieve(["wombat"], 3) == [[]]


def test_one_writer_per_index_and_read_only_views(writable) -> None:  # type: ignore[no-untyped-def]
    from tandem.sparse import SparseRetriever

    with pytest.raises(Unavailable, match="open for writing"):
        SparseRetriever(writable.index_dir)
    with SparseRetriever(writable.index_dir, writable=False) as ro:
        with pytest.raises(InvalidInput, match="writable"):
            ro.upsert([Item(item_id="x", title="x")])


def test_long_query_is_truncated_with_a_warning(reader, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    long_query = "garden hose " + " ".join(f"w{i}" for i in range(3000))  # > 10,000 characters
    assert len(long_query) > 10_000
    with caplog.at_level(logging.WARNING, logger="tandem.sparse.retriever"):
        hits = reader.retrieve([long_query], 5)[0]
    assert {"h1", "h2"} <= {h.item_id for h in hits}
    assert "truncated" in caplog.text


def test_odd_queries_never_raise_jvm_errors(reader) -> None:  # type: ignore[no-untyped-def]
    odd = ["the of and", 'drill AND (hose OR "x") ~2 ^3 * ? : \\ /', "über straße 漢字", "a" * 5000]
    results = reader.retrieve(odd, 5)
    assert results[0] == [] and results[2] == [] and results[3] == []
    assert {h.item_id for h in results[1]} >= {"d1", "h1"}


def test_missing_index_and_bad_config(tmp_path: Path, built_index: Path) -> None:
    from tandem.errors import NotFound
    from tandem.sparse import SparseConfig, SparseRetriever

    with pytest.raises(NotFound, match="build it first"):
        SparseRetriever(tmp_path / "nothing")
    with pytest.raises(ValueError, match="`fields`"):
        SparseConfig(fields={"colour": 1.0})
    with pytest.raises(ValueError, match="`fields\\[title\\]`"):
        SparseConfig(fields={"title": 0.0})


def test_index_cli_build_upsert_delete_stats(tmp_path: Path) -> None:
    from tandem_app.cli import app

    index = tmp_path / "idx"
    runner = CliRunner()
    r = runner.invoke(app, ["index", "build", str(DATA / "bad_rows.jsonl"), "--index", str(index)])
    assert r.exit_code == 0, r.output
    assert "2 items loaded, 7 of 9 rows skipped" in r.output and "bad_rows.jsonl:4" in r.output
    new = tmp_path / "new.jsonl"
    new.write_text('{"item_id": "n1", "title": "Quokka Level"}\n{"item_id": "ok1", "title": "Claw Hammer 20 oz"}\n')
    r = runner.invoke(app, ["index", "upsert", str(new), "--index", str(index)])
    assert r.exit_code == 0 and "upserted 2 items" in r.output and "3 documents" in r.output, r.output
    r = runner.invoke(app, ["index", "delete", "ok2", "zzz", "--index", str(index)])
    assert r.exit_code == 0 and "deleted 1 of 2 ids" in r.output, r.output
    r = runner.invoke(app, ["index", "stats", "--index", str(index), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["documents"] == 2
    r = runner.invoke(app, ["index", "build", str(DATA / "bad_rows.jsonl"), "--index", str(index), "--strict"])
    assert r.exit_code == 2 and "strict" in r.output


def test_eval_cli_runs_bm25_and_reuses_the_cached_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tandem_app.cli import app
    from tandem.config import get_settings

    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        args = ["eval", "--system", "bm25", "--catalog", str(DATA / "products.jsonl"), "--rel", "4",
                "--queries", str(DATA / "queries.tsv"), "--qrels", str(DATA / "qrels.txt")]  # fmt: skip
        r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "a.json")])
        assert r.exit_code == 0, r.output
        report = json.loads((tmp_path / "a.json").read_text())
        assert report["queries"] == 4 and report["metrics"]["RR(rel=4)@10"] == pytest.approx(1.0)
        assert (tmp_path / "a.bm25.run").read_text().startswith("q1 Q0 d1 1 ")
        [cached] = list((tmp_path / "home" / "indexes").iterdir())
        stamp = (cached / "tandem-index.json").stat().st_mtime_ns
        # A second setting against the first one's run file: reuses the index, compares.
        r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b.json"), "--k1", "1.2",
                                     "--run", str(tmp_path / "a.bm25.run")])  # fmt: skip
        assert r.exit_code == 0, r.output
        assert (cached / "tandem-index.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
        b = json.loads((tmp_path / "b.json").read_text())
        assert set(b["systems"]) == {"bm25", "a.bm25"}
        assert [t["measure"] for t in b["significance"]["bm25 vs a.bm25"]][:2] == ["nDCG@10", "R(rel=4)@10"]
    finally:
        get_settings.cache_clear()
