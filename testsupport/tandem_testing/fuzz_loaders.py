"""Fuzz targets for catalog files: ``load_items`` on generated JSONL and CSV catalogs.

A catalog file is operator input: rows may be duplicates, invalid items, broken JSON, blank,
or CSV with stray quotes, separators, newlines and wrong column counts. Every non-blank row
must be loaded or skipped with its own line number and a reason, and ``strict`` mode must
refuse at the first bad line; for JSONL an oracle recomputes which lines are bad. Failure
type and shared strategies: :mod:`tandem_testing.fuzz`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from pydantic import ValidationError

from tandem.catalog.item import Item
from tandem.catalog.loaders import load_items
from tandem.errors import InvalidInput
from tandem_testing.fuzz import FuzzFailure, _crash, dump_json, item_bodies, json_values, proto_text

CSV_COLUMNS = ("item_id", "title", "description", "brand", "category", "attributes", "price", "version")


@dataclass(frozen=True)
class RawLine:
    """A catalog row written verbatim (broken JSON, blank lines), not JSON-encoded."""

    text: str


def catalog_rows() -> st.SearchStrategy[list[Any]]:
    """JSONL rows: good items, duplicates, invalid items, non-objects, broken JSON and blank lines.
    Each row is a JSON-able value (a ``str`` too) or a :class:`RawLine`."""
    good = st.builds(lambda i, t, p: {"item_id": f"g{i}", "title": t or "x", "price": p},
                     st.integers(0, 6), st.sampled_from(["Drill", "Saw &amp; Blade", " Paint "]),
                     st.none() | st.floats(0, 1e6))
    text_rows = st.one_of(st.sampled_from(["", "   ", "{", '{"item_id": ', "[1, 2", "nul\x00l", "\t"]),
                          proto_text.map(lambda s: s.replace("\n", " ").replace("\r", " "))).map(RawLine)
    row = st.one_of(good, good, item_bodies(), json_values, text_rows)
    return st.lists(row, max_size=12)


def _dump_utf8(value: Any) -> str:
    # Lone surrogates cannot be written as UTF-8; JSON's \u escapes can carry them.
    text = dump_json(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value, allow_nan=True)
    return text


def check_jsonl_file(tmp: Path, rows: Sequence[Any], strict: bool = False) -> str:
    """``load_items`` on a JSONL file of ``rows``: every non-blank line is loaded or skipped
    with its own line number and a reason (an oracle recomputes which), ``strict`` raises
    ``InvalidInput`` at the first bad line; nothing else."""
    path = tmp / "catalog.jsonl"
    lines = [r.text if isinstance(r, RawLine) else _dump_utf8(r) for r in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    expected_bad, seen, data_rows = [], set(), 0
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        data_rows += 1
        try:
            obj = json.loads(line)
            item = Item.model_validate(obj) if isinstance(obj, dict) else None
        except (ValueError, ValidationError):
            item = None
        if item is None or item.item_id in seen:
            expected_bad.append(n)
        else:
            seen.add(item.item_id)
    return _check_load(path, data_rows, expected_bad, strict)


def csv_files() -> st.SearchStrategy[tuple[list[str], list[list[str]]]]:
    """A CSV header (always with ``item_id``, sometimes unknown columns) and rows of arbitrary
    cells, including quotes, separators, newlines, wrong column counts and bad numbers."""
    header = st.lists(st.sampled_from(CSV_COLUMNS + ("colour",)), unique=True, max_size=5).map(
        lambda h: ["item_id", *[c for c in h if c != "item_id"]])
    cell = st.one_of(st.sampled_from(["", "t01", "Drill", "-1", "12.5", "nan", "inf", '{"a": "b"}', "[1]", "{",
                                      "a,b", 'say "hi"', "line\nbreak", " "]),
                     proto_text)
    return st.tuples(header, st.lists(st.lists(cell, min_size=0, max_size=6), max_size=10))


def check_csv_file(tmp: Path, header: list[str], rows: list[list[str]], strict: bool = False) -> str:
    """``load_items`` on a CSV file: loaded + skipped == non-blank rows, every skip is
    reported at a line inside the file, ``strict`` raises ``InvalidInput``; nothing else."""
    path = tmp / "catalog.csv"
    buf = io.StringIO(newline="")
    # "\r\n" rows make the writer quote cells holding "\r" or "\n" (with "\n" it leaves a lone
    # "\r" unquoted, which any reader then splits: a different file than the one meant).
    csv.writer(buf, lineterminator="\r\n").writerows([header, *rows])
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    data_rows = sum(1 for r in rows if any(c.strip() for c in r))
    try:
        result = load_items(path, strict=False)
    except Exception as exc:
        raise _crash("load_items(csv)", exc, (header, rows)) from exc
    total_lines = len(buf.getvalue().splitlines())  # an upper bound: splitlines knows more breaks
    if len(result.items) + result.skipped != result.rows or result.rows != data_rows:
        raise FuzzFailure(f"csv: {result.summary()} but the file has {data_rows} rows: {(header, rows)!r:.300}")
    lines = [e.line for e in result.errors]
    if lines != sorted(set(lines)) or any(not 2 <= n <= total_lines for n in lines):
        raise FuzzFailure(f"csv: skip lines {lines} out of order or outside 2..{total_lines}: {rows!r:.300}")
    if strict:
        return _check_strict(path, result.errors[0].line if result.errors else None)
    return "skips" if result.errors else "ok"


def _check_load(path: Path, data_rows: int, expected_bad: list[int], strict: bool) -> str:
    try:
        result = load_items(path, strict=False)
    except Exception as exc:
        raise _crash("load_items", exc, path.read_text(encoding="utf-8", errors="replace")) from exc
    got_bad = [e.line for e in result.errors]
    if result.rows != data_rows or len(result.items) + result.skipped != data_rows or got_bad != expected_bad:
        raise FuzzFailure(f"{path.name}: {result.summary()}, skipped lines {got_bad}; expected {data_rows} rows "
                          f"with bad lines {expected_bad}")
    if any(str(e.path) != str(path) or not e.reason for e in result.errors):
        raise FuzzFailure(f"{path.name}: a skip without path or reason: {result.errors!r:.300}")
    if strict:
        return _check_strict(path, expected_bad[0] if expected_bad else None)
    return "skips" if expected_bad else "ok"


def _check_strict(path: Path, first_bad: int | None) -> str:
    try:
        load_items(path, strict=True)
    except InvalidInput as exc:
        if first_bad is None or f"{path}:{first_bad}:" not in str(exc):
            raise FuzzFailure(f"{path.name}: strict refusal {exc!s:.200} but first bad line is {first_bad}") from None
        return "strict_refused"
    except Exception as exc:
        raise _crash("load_items(strict)", exc, path) from exc
    if first_bad is not None:
        raise FuzzFailure(f"{path.name}: strict mode accepted a file with a bad line {first_bad}")
    return "ok"
