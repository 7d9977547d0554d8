"""Catalog snapshot loaders: JSONL, CSV and Parquet files into validated :class:`Item` lists.

A bad row never disappears silently: by default it is skipped and reported (file, line
and reason in :class:`LoadResult`); with ``strict=True`` the first bad row raises
:class:`~tandem.errors.InvalidInput`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from tandem.catalog.item import Item
from tandem.errors import InvalidInput

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet", "anserini")

#: Suffix → format. ``anserini`` (``{"id", "contents"}`` lines, as in Anserini's
#: JsonCollection and CACM) shares the JSONL suffixes and is chosen by content or ``format``.
_SUFFIXES: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass(frozen=True)
class RowError:
    """One rejected row: where it was and why."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class LoadResult:
    """Items read from a catalog file plus every row that was skipped, with its reason."""

    items: list[Item] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    rows: int = 0
    """Data rows seen (blank JSONL lines are not rows)."""

    @property
    def skipped(self) -> int:
        """Number of rows skipped (each has an entry in :attr:`errors`)."""
        return len(self.errors)

    def summary(self) -> str:
        """One line for logs and CLI output."""
        return f"{len(self.items)} items loaded, {self.skipped} of {self.rows} rows skipped"


def detect_format(path: str | Path) -> str:
    """Format of ``path`` from its suffix (``.gz`` is looked through); JSONL files whose
    first row is ``{"id", "contents"}`` are Anserini collections."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in _SUFFIXES:
        raise InvalidInput(
            f"`format` cannot be detected from the suffix of {p.name!r}; pass one of {', '.join(FORMATS)}"
        )
    fmt = _SUFFIXES[suffixes[-1]]
    if fmt == "jsonl":
        opener = gzip.open if p.suffix.lower() == ".gz" else open
        with opener(p, "rb") as f:  # bytes: a bad UTF-8 row is the reader's to report, not ours
            for raw in f:
                line = raw.decode("utf-8", errors="replace")
                if line.strip():
                    try:
                        first = json.loads(line)
                    except (ValueError, RecursionError):  # reported per row by the reader
                        break
                    if isinstance(first, dict) and "item_id" not in first and {"id", "contents"} <= set(first):
                        fmt = "anserini"
                    break
    return fmt


def load_items(path: str | Path, format: str | None = None, strict: bool = False) -> LoadResult:
    """Read a catalog snapshot into validated, normalised items.

    ``format`` is one of ``jsonl``, ``csv`` (``.tsv`` means tab-separated), ``parquet`` or
    ``anserini`` (``{"id", "contents"}`` JSON lines: id → ``item_id``, contents → ``title``);
    detected from the suffix when ``None``. A row that fails validation, or repeats an
    ``item_id`` seen earlier in the file, is skipped and reported; ``strict`` raises instead.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"`path` {str(p)!r} is not a file")
    fmt = format or detect_format(p)
    if fmt not in FORMATS:
        raise InvalidInput(f"`format` must be one of {', '.join(FORMATS)}, got {fmt!r}")
    rows = {
        "jsonl": _json_lines,
        "anserini": _anserini_rows,
        "csv": _csv_rows,
        "parquet": _parquet_rows,
    }[fmt](p)
    result = LoadResult()
    first_line: dict[str, int] = {}
    for line, row in rows:
        result.rows += 1
        reason: str | None
        item: Item | None = None
        if isinstance(row, str):
            reason = row  # the reader already knows what is wrong with this row
        else:
            reason, item = _validate(row)
        if item is not None and item.item_id in first_line:
            reason = f"duplicate `item_id` {item.item_id!r} (first at line {first_line[item.item_id]})"
            item = None
        if item is None:
            err = RowError(str(p), line, reason or "invalid row")
            if strict:
                raise InvalidInput(f"bad catalog row (strict mode): {err}")
            result.errors.append(err)
            continue
        first_line[item.item_id] = line
        result.items.append(item)
    if result.errors:
        log.warning("%s: %s; first: %s", p, result.summary(), result.errors[0])
    return result


def _validate(row: dict[str, Any]) -> tuple[str | None, Item | None]:
    try:
        return None, Item.model_validate(row)
    except ValidationError as e:
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "row"
            parts.append(f"`{loc}`: {err['msg']}")
        return "; ".join(parts), None


def _open_text(p: Path) -> IO[str]:
    if p.suffix.lower() == ".gz":
        return io.TextIOWrapper(gzip.open(p, "rb"), encoding="utf-8", newline="")
    return open(p, encoding="utf-8", newline="")


def _json_lines(p: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    # Bytes, decoded per line: one line of bad UTF-8 is a skipped row, not a failed file.
    opener = gzip.open if p.suffix.lower() == ".gz" else open
    with opener(p, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, f"not valid UTF-8 at byte {e.start}"
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, f"invalid JSON: {e.msg} at column {e.colno}"
                continue
            except (ValueError, RecursionError) as e:  # >4300-digit integers, deep nesting
                yield lineno, f"invalid JSON: {'nested too deeply' if isinstance(e, RecursionError) else e}"
                continue
            if not isinstance(obj, dict):
                yield lineno, f"expected a JSON object, got {type(obj).__name__}"
                continue
            yield lineno, obj


def _anserini_rows(p: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for lineno, obj in _json_lines(p):
        if isinstance(obj, str):
            yield lineno, obj
            continue
        extra = set(obj) - {"id", "contents"}
        if extra:
            yield lineno, f"unexpected keys {sorted(extra)} in an Anserini {{id, contents}} row"
            continue
        yield lineno, {"item_id": obj.get("id"), "title": obj.get("contents")}


def _csv_cell_row(header: list[str], cells: list[str]) -> dict[str, Any] | str:
    if len(cells) != len(header):
        return f"expected {len(header)} columns, got {len(cells)}"
    row: dict[str, Any] = {}
    for name, value in zip(header, cells):
        if value == "":
            continue  # an empty cell means "not given", not an empty string
        if name == "attributes":
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                return "`attributes` must be a JSON object in CSV cells"
        row[name] = value
    return row


def _csv_rows(p: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    delimiter = "\t" if ".tsv" in [s.lower() for s in p.suffixes] else ","
    with _open_text(p) as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return
        if "item_id" not in header:
            raise InvalidInput(f"`path` {p}: CSV header must name an `item_id` column, got {header}")
        end_of_previous = reader.line_num
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:  # e.g. a cell over csv.field_size_limit(); the reader cannot resync
                raise InvalidInput(f"`path` {p}:{end_of_previous + 1}: unreadable CSV row: {e}") from None
            # A quoted cell may span lines; a row starts right after the previous one ended.
            lineno, end_of_previous = end_of_previous + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            yield lineno, _csv_cell_row(header, cells)


def _parquet_rows(p: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(p)
    # Parquet has no lines; the "line" of a row is its 1-based row number.
    for i, row in enumerate(table.to_pylist(), start=1):
        clean = {k: v for k, v in row.items() if v is not None}
        if isinstance(clean.get("attributes"), list):  # pyarrow maps come back as pairs
            clean["attributes"] = dict(clean["attributes"])
        yield i, clean
