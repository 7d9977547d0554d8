"""Training data a pipeline prepares before training: pseudo-queries and a BM25 run.

The base pipeline's "pseudo-queries and hard negatives" step writes, for a snapshot:

* ``pseudo_queries.jsonl`` — ``{"item_id", "queries"}`` per item: the template
  pseudo-queries (:func:`tandem.training.pseudo.template_queries`) the trainer adds as
  query→id pairs, inspectable before hours of training are spent on them;
* ``bm25_run.json`` — query text → BM25-ranked item IDs for every real and pseudo query,
  the source of BM25-hard negatives (items BM25 ranks high that are not the query's item).

:func:`tandem.training.run.train_generative` reads both (``pseudo_queries=``,
``bm25_run=``), so the trainer does not recompute them and what trained is on record.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tandem.catalog.item import Item
from tandem.errors import CorruptArtifact

PSEUDO_FILE = "pseudo_queries.jsonl"
RUN_FILE = "bm25_run.json"
#: BM25 hits kept per query: enough hard negatives beyond the query's positives.
RUN_DEPTH = 50


def prepare_training_data(items: Sequence[Item], queries: Sequence[str], pseudo_per_item: int, seed: int,
                          out: Path, *, bm25: bool = True) -> dict[str, Any]:
    """Write ``pseudo_queries.jsonl`` and (with ``bm25``) ``bm25_run.json`` into ``out``.

    ``queries`` are the real training query texts; ``pseudo_per_item`` 0 writes an empty
    pseudo-query file (the profile has them off). Returns counts for the step's metadata.
    """
    from tandem.training.pseudo import template_queries

    out.mkdir(parents=True, exist_ok=True)
    pseudo = {it.item_id: template_queries(it, pseudo_per_item, seed) if pseudo_per_item else [] for it in items}
    with open(out / PSEUDO_FILE, "w", encoding="utf-8") as f:
        for item_id, qs in pseudo.items():
            f.write(json.dumps({"item_id": item_id, "queries": qs}) + "\n")
    texts = sorted({*queries, *(q for qs in pseudo.values() for q in qs)})
    summary: dict[str, Any] = {"items": len(items), "pseudo_queries": sum(map(len, pseudo.values())),
                               "real_queries": len(set(queries)), "bm25_queries": 0}
    if bm25 and texts:
        from tandem.training.negatives import bm25_run

        with tempfile.TemporaryDirectory() as tmp:  # the index is scaffolding; the run is the product
            run = bm25_run(items, texts, RUN_DEPTH, Path(tmp) / "bm25")
        (out / RUN_FILE).write_text(json.dumps(run))
        summary["bm25_queries"] = len(run)
    return summary


def read_pseudo_queries(path: Path) -> dict[str, list[str]]:
    """``item_id → queries`` from a ``pseudo_queries.jsonl``."""
    out: dict[str, list[str]] = {}
    try:
        for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):  # noqa: B007 (n: the error line)
            if line.strip():
                row = json.loads(line)
                out[str(row["item_id"])] = [str(q) for q in row["queries"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CorruptArtifact(f"{path} line {n}: not a pseudo-query row ({exc})") from None
    return out


def read_bm25_run(path: Path) -> Mapping[str, list[str]]:
    """Query text → ranked item IDs from a ``bm25_run.json``."""
    try:
        run = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CorruptArtifact(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(run, dict) or not all(isinstance(v, list) for v in run.values()):
        raise CorruptArtifact(f"{path} is not a query → item IDs mapping")
    return run
