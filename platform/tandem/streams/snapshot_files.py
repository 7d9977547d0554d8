"""The files of a catalog snapshot: the items (JSONL or Parquet), their checksum, the manifest.

:meth:`tandem.streams.store.CatalogStore.snapshot` decides *what* goes into a snapshot
(one consistent read of the store); this module writes it, atomically per file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tandem.catalog.item import Item
from tandem.versioned import sha256_file

SNAPSHOT_FORMAT_VERSION = "1.0"


class SnapshotManifest(BaseModel):
    """``manifest.json`` of a snapshot folder: what the pipelines read before the items."""

    model_config = ConfigDict(extra="ignore")

    format_version: str = SNAPSHOT_FORMAT_VERSION
    snapshot_version: int
    """Increasing number of this snapshot in its store."""
    seq: int
    """Store sequence number covered: every change with ``seq`` <= this is in the snapshot."""
    created: float
    items: int
    """Live items written."""
    tombstones: int
    """Deleted items known to the store (not written)."""
    quarantined: int = 0
    """Live items held back by the ingest poisoning quarantine (not written)."""
    format: Literal["jsonl", "parquet"]
    files: dict[str, str]
    """File name → sha256."""


def write_items(items: Sequence[Item], path: Path, fmt: Literal["jsonl", "parquet"]) -> str:
    """Write ``items`` to ``path`` (through a temporary file, then renamed); returns its sha256."""
    tmp = path.parent / f".{path.name}.tmp"
    if fmt == "jsonl":
        with tmp.open("w", encoding="utf-8") as f:
            for item in items:
                f.write(item.model_dump_json(exclude_none=True) + "\n")
    else:
        _write_parquet(items, tmp)
    tmp.replace(path)
    return sha256_file(path)


def _write_parquet(items: Sequence[Item], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [i.model_dump() for i in items]
    # Attributes vary per item; a JSON string column keeps the schema fixed across snapshots.
    for r in rows:
        r["attributes"] = json.dumps(r["attributes"], ensure_ascii=False)
    schema = pa.schema(
        [("item_id", pa.string()), ("title", pa.string()), ("description", pa.string()), ("brand", pa.string()),
         ("category", pa.list_(pa.string())), ("attributes", pa.string()), ("price", pa.float64()),
         ("version", pa.int64())]
    )  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
