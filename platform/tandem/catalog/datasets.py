"""Adapters for the benchmark datasets: Home Depot product search and CACM.

Each returns a :class:`Dataset`: the catalog (as a :class:`LoadResult`), query splits and
qrels splits, read with the same loaders a user's own files go through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tandem.catalog.loaders import LoadResult, load_items
from tandem.catalog.queries import Qrels, read_qrels, read_queries
from tandem.errors import InvalidInput


@dataclass
class Dataset:
    """A catalog with judged query sets, split by name (``train``, ``dev``, ``test``)."""

    name: str
    catalog: LoadResult
    queries: dict[str, dict[str, str]] = field(default_factory=dict)
    qrels: dict[str, Qrels] = field(default_factory=dict)
    catalog_path: Path | None = None


def _need(root: Path, name: str) -> Path:
    p = root / name
    if not p.is_file():
        raise InvalidInput(f"`root` {root} lacks {name}")
    return p


def load_homedepot(root: str | Path, splits: tuple[str, ...] = ("train", "dev")) -> Dataset:
    """Home Depot: ``products.jsonl`` plus ``queries.<split>.tsv`` / ``qrels.<split>.txt``."""
    r = Path(root)
    products = _need(r, "products.jsonl")
    ds = Dataset(name="homedepot", catalog=load_items(products, format="jsonl"), catalog_path=products)
    for split in splits:
        ds.queries[split] = read_queries(_need(r, f"queries.{split}.tsv"))
        ds.qrels[split] = read_qrels(_need(r, f"qrels.{split}.txt"))
    return ds


def load_cacm(root: str | Path) -> Dataset:
    """CACM: Anserini ``cacm.json`` collection, ``topics.cacm.txt``, ``qrels.cacm.txt`` (split ``test``)."""
    r = Path(root)
    coll = _need(r, "cacm.json")
    ds = Dataset(name="cacm", catalog=load_items(coll, format="anserini"), catalog_path=coll)
    ds.queries["test"] = read_queries(_need(r, "topics.cacm.txt"))
    ds.qrels["test"] = read_qrels(_need(r, "qrels.cacm.txt"))
    return ds
