"""Catalog loaders: formats, normalisation, bad rows reported with file:line, strict mode."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tandem.catalog import Item, detect_format, load_items, read_qrels, read_queries
from tandem.catalog.datasets import load_cacm
from tandem.catalog.queries import write_queries
from tandem.errors import InvalidInput

DATA = Path(__file__).resolve().parents[1] / "data" / "catalog"


def test_jsonl_loads_all_fields_and_normalises() -> None:
    res = load_items(DATA / "products.jsonl")
    assert res.skipped == 0 and res.rows == len(res.items) == 12
    by_id = {i.item_id: i for i in res.items}
    assert by_id["d1"].attributes == {"voltage": "20V", "chuck": "1/2 in."}
    assert by_id["d2"].category == ["Tools", "Power Tools", "Drills"]  # "A > B" path split
    assert by_id["p1"].description == "Low odour acrylic & washable finish."  # entity unescaped


def test_bad_rows_are_skipped_and_reported_with_line_numbers() -> None:
    res = load_items(DATA / "bad_rows.jsonl")
    assert [i.item_id for i in res.items] == ["ok1", "ok2"]
    lines = {e.line: e.reason for e in res.errors}
    # line 2 is blank (not a row); every other bad line is accounted for.
    assert sorted(lines) == [4, 5, 6, 7, 8, 9, 10]
    assert "invalid JSON" in lines[4]
    assert "`title`" in lines[5]
    assert "`price`" in lines[6]
    assert "duplicate `item_id`" in lines[7] and "line 1" in lines[7]
    assert "JSON object" in lines[8]
    assert "`colour`" in lines[9]
    assert "control characters" in lines[10]
    assert res.rows == 9 and res.skipped == 7
    assert str(res.errors[0]).startswith(f"{DATA / 'bad_rows.jsonl'}:4: ")


def test_strict_mode_fails_on_the_first_bad_row() -> None:
    with pytest.raises(InvalidInput, match=r"bad_rows.jsonl:4"):
        load_items(DATA / "bad_rows.jsonl", strict=True)


def test_csv_quoting_multiline_and_bad_cells() -> None:
    res = load_items(DATA / "products.csv")
    by_id = {i.item_id: i for i in res.items}
    assert by_id["c1"].title == "Cordless Drill, 20V"
    assert by_id["c1"].attributes == {"voltage": "20V"} and by_id["c1"].price == 99.5
    assert by_id["c2"].title == "Multi-line title"  # whitespace folded
    errors = {e.line: e.reason for e in res.errors}
    # c2 spans lines 3-4, so c3 starts on line 5.
    assert set(errors) == {5, 6, 7}
    assert "`title`" in errors[5] and "`attributes`" in errors[6] and "`price`" in errors[7]


def test_parquet_round_trip(tmp_path: Path) -> None:
    items = load_items(DATA / "products.jsonl").items
    schema = pa.schema(
        [
            ("item_id", pa.string()),
            ("title", pa.string()),
            ("category", pa.list_(pa.string())),
            ("attributes", pa.map_(pa.string(), pa.string())),
            ("price", pa.float64()),
        ]
    )
    rows = [
        {"item_id": i.item_id, "title": i.title, "category": i.category,
         "attributes": list(i.attributes.items()), "price": i.price}
        for i in items
    ]  # fmt: skip
    path = tmp_path / "cat.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    res = load_items(path)
    assert res.skipped == 0
    assert [i.title for i in res.items] == [i.title for i in items]
    assert res.items[0].category == items[0].category
    assert res.items[0].attributes == items[0].attributes and res.items[0].price == items[0].price


def test_anserini_collection_is_detected(tmp_path: Path) -> None:
    p = tmp_path / "coll.jsonl"
    p.write_text('{"id": "A-1", "contents": "Some text &amp; more"}\n{"id": "A-2", "contents": ""}\n')
    assert detect_format(p) == "anserini"
    res = load_items(p)
    assert [i.item_id for i in res.items] == ["A-1"] and res.items[0].title == "Some text & more"
    assert res.skipped == 1 and "`title`" in res.errors[0].reason


def test_unknown_format_and_missing_file() -> None:
    with pytest.raises(InvalidInput, match="`format`"):
        load_items(DATA / "README.md")
    with pytest.raises(InvalidInput, match="`format`"):
        load_items(DATA / "products.jsonl", format="xml")
    with pytest.raises(InvalidInput, match="`path`"):
        load_items(DATA / "nope.jsonl")


def test_item_text_contains_every_field() -> None:
    item = Item(item_id="x", title="Drill", brand="Volta", category=["Tools"], attributes={"v": "20V"}, description="d")
    assert item.text() == "Drill Volta Tools v 20V d"


def test_read_queries_tsv_and_trec_topics(tmp_path: Path) -> None:
    assert read_queries(DATA / "queries.tsv")["q2"] == "garden hose"
    assert read_queries(DATA / "topics.trec.txt") == {"101": "cordless drill", "102": "garden hose"}
    out = tmp_path / "q.tsv"
    write_queries({"a": "x  y"}, out)
    assert read_queries(out) == {"a": "x y"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1 no tab here\n")
    with pytest.raises(InvalidInput, match=r"bad.tsv:1"):
        read_queries(bad)


def test_read_qrels_and_errors(tmp_path: Path) -> None:
    qrels = read_qrels(DATA / "qrels.txt")
    assert qrels["q1"] == {"d1": 6, "d2": 4, "s1": 1}
    bad = tmp_path / "bad.txt"
    bad.write_text("q1 0 d1 x\n")
    with pytest.raises(InvalidInput, match=r"bad.txt:1"):
        read_qrels(bad)


def test_cacm_adapter_reads_cacm_topic_layout(tmp_path: Path) -> None:
    (tmp_path / "cacm.json").write_text('{"id": "CACM-1", "contents": "time sharing"}\n')
    (tmp_path / "topics.cacm.txt").write_text("<DOC>\n<DOCNO> 1 </DOCNO>\n\n What about\n TSS?\n</DOC>\n")
    (tmp_path / "qrels.cacm.txt").write_text("1 Q0 CACM-1 1\n")
    ds = load_cacm(tmp_path)
    assert ds.queries["test"] == {"1": "What about TSS?"}
    assert ds.qrels["test"] == {"1": {"CACM-1": 1}}
    assert ds.catalog.items[0].title == "time sharing"


def test_fresh_split_qrels_judges_fresh_queries_on_their_fresh_items_only() -> None:
    from tandem.catalog.datasets import fresh_split_qrels

    qrels = {"q1": {"new": 5, "old": 6}, "q2": {"old": 4, "new": 2}, "q3": {"old": 1}, "q4": {"new2": 4}}
    fresh, old = fresh_split_qrels(qrels, {"new", "new2"})
    assert fresh == {"q1": {"new": 5}, "q4": {"new2": 4}}
    assert old == {"q2": {"old": 4, "new": 2}}  # q3 has nothing relevant: in neither split
