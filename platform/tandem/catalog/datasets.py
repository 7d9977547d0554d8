"""Adapters for the benchmark datasets: Home Depot product search and CACM.

Each returns a :class:`Dataset`: the catalog (as a :class:`LoadResult`), query splits and
qrels splits, read with the same loaders a user's own files go through.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
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


def is_fresh(item_id: str) -> bool:
    """BENCHMARK.md's fresh-item split: about 5% of ids, left out of the base catalog and
    streamed in later (what the hourly adapter must make retrievable)."""
    return int(hashlib.sha1(("fresh:" + item_id).encode()).hexdigest(), 16) % 20 == 0


def fresh_split_qrels(qrels: Mapping[str, Mapping[str, int]], fresh_ids: Collection[str],
                      rel: int = 4) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Qrels split for BENCHMARK.md's fresh-item report: *fresh* — queries with a relevant
    (grade ≥ ``rel``) fresh item, judged on those items only (new-item recall); *old* —
    every other query with a relevant item, judged whole (forgetting)."""
    fresh: dict[str, dict[str, int]] = {}
    old: dict[str, dict[str, int]] = {}
    for q, judged in qrels.items():
        new_rel = {i: g for i, g in judged.items() if i in fresh_ids and g >= rel}
        if new_rel:
            fresh[q] = new_rel
        elif any(g >= rel for g in judged.values()):
            old[q] = dict(judged)
    return fresh, old


def data_root(dataset: str = "") -> Path:
    """Where the benchmark data lives: ``TANDEM_DATA``, else ``shared/data`` beside or inside the repo.

    Raises :class:`InvalidInput` naming the setting when none of the candidates exists.
    """
    from tandem.config import get_settings

    configured = get_settings().data
    repo = Path(__file__).resolve().parents[3]
    candidates = [configured] if configured else [repo.parent / "shared" / "data", repo / "shared" / "data",
                                                  Path.cwd().parent / "shared" / "data"]
    for base in candidates:
        if base is not None and (base / dataset).is_dir():
            return base / dataset
    raise InvalidInput(
        f"benchmark data {dataset or ''} not found in {', '.join(str(c) for c in candidates)}; "
        "set `TANDEM_DATA` to the folder that holds `homedepot/` and `cacm/`"
    )


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
