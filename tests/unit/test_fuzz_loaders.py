"""Fuzzing of the catalog loaders: a file with junk rows loads every good row and reports
every bad one at its line (loaded + skipped == rows), or refuses cleanly with ``strict``."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tandem_testing.fuzz import FuzzFailure
from tandem_testing.fuzz_loaders import RawLine, catalog_rows, check_csv_file, check_jsonl_file, csv_files

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_loaders")


@FUZZ
@given(rows=catalog_rows(), strict=st.booleans())
def test_jsonl_rows_are_loaded_or_reported(workdir: Path, rows, strict: bool) -> None:
    check_jsonl_file(workdir, rows, strict)


@FUZZ
@given(csv=csv_files(), strict=st.booleans())
def test_csv_rows_are_loaded_or_reported(workdir: Path, csv, strict: bool) -> None:
    check_csv_file(workdir, *csv, strict=strict)


def test_the_oracle_pins_exact_lines(tmp_path: Path) -> None:
    rows = [{"item_id": "a", "title": "x"}, RawLine(""), RawLine("{"), {"item_id": "a", "title": "y"}, [1],
            {"item_id": "b"}, "a\rb"]
    assert check_jsonl_file(tmp_path, rows) == "skips"
    assert check_jsonl_file(tmp_path, rows, strict=True) == "strict_refused"
    assert check_csv_file(tmp_path, ["item_id", "title"], [["a", "x"], ["", ""], ["b"], ["a", "x"]]) == "skips"


# Regressions found by this fuzzing: each of these files once made load_items raise a
# non-domain exception instead of skipping the row (or raising InvalidInput).

def test_jsonl_with_non_utf8_row(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_bytes(b'{"item_id": "a", "title": "x"}\n\xff\xfe\n')
    _expect_skip(path)


def test_jsonl_with_huge_integer(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text('{"item_id": "a", "title": "x"}\n' + "1" * 5000 + "\n")
    _expect_skip(path)


def test_jsonl_with_deep_nesting(tmp_path: Path) -> None:
    path = tmp_path / "catalog.jsonl"
    path.write_text('{"item_id": "a", "title": "x"}\n' + "[" * 100_000 + "\n")
    _expect_skip(path)


def test_csv_with_oversized_cell(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text("item_id,title\na,x\nb," + "x" * 200_000 + "\n")
    _expect_skip(path)


def _expect_skip(path: Path) -> None:
    from tandem.catalog.loaders import load_items
    from tandem.errors import InvalidInput

    try:
        result = load_items(path)
    except InvalidInput:
        return  # a clear, domain-level refusal of the whole file is acceptable too
    except Exception as exc:
        raise FuzzFailure(f"load_items: {type(exc).__name__}: {str(exc)[:120]}") from exc
    assert result.rows == len(result.items) + result.skipped == 2 and result.skipped == 1
