"""The ``ci`` base and hourly adapter that ``tests/e2e/test_adapter_ci.py`` and ``test_merge_ci.py``
both start from, trained once per test session (``tests/e2e/conftest.py``).

Both tests used to train the very same base (same catalog, queries, seed and flags) and the very
same adapter on it, each for itself: two of the suite's longest trainings done twice. The set-up
runs here once, through the CLI and the registry exactly as the tests ran it; each test works on
its own copy (:meth:`BaseAndAdapter.copy_to`) and still asserts on the CLI runs' results.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tandem_testing.synthetic_catalog import SyntheticSet, synthetic_catalog

N_ITEMS = 600
K = 10
#: The replay share and pseudo-queries per item the adapter trains with. The chapter's
#: 80/20 (the CLI default) costs this small base several points of old-item R@10; half
#: replay with 8 pseudo-queries per new item (4 per replayed old one) loses none here
#: (measured: old R@10 0.875 -> 0.880). ``python -m bench.adapter`` reports the variants.
ADAPTER_ARGS = ["--replay", "0.5", "--set", "queries_per_item=8"]


def jsonl(path: Path, items: list[Any]) -> Path:
    """Write ``items`` as a JSONL catalog at ``path``; returns ``path``."""
    path.write_text("".join(json.dumps(it.model_dump(exclude_none=True)) + "\n" for it in items))
    return path


def recall(retriever: Any, data: SyntheticSet, ids: set[str]) -> float:
    """R(rel=4)@K of ``retriever`` over the dev queries whose judged item is in ``ids``."""
    from tandem.eval import evaluate, run_retriever

    qrels = {q: r for q, r in data.dev_qrels.items() if next(iter(r)) in ids}
    run = run_retriever(retriever, {q: data.dev_queries[q] for q in qrels}, k=K)
    return float(evaluate(run, qrels, [f"R(rel=4)@{K}"]).metrics[f"R(rel=4)@{K}"])


@dataclass(frozen=True)
class BaseAndAdapter:
    """A trained ci base published and promoted in a registry, and the adapter CLI run on it.

    ``root`` holds ``base/`` (the base model folder), ``registry/``, ``adapter/`` (the adapter
    CLI's output), ``base.jsonl`` (catalog without fresh items), ``catalog.jsonl`` (all items),
    ``q.tsv`` and ``qrels.txt`` (train queries). ``adapter_exit``/``adapter_output`` are the
    adapter CLI's result, for the tests to assert on.
    """

    root: Path
    data: SyntheticSet
    fresh: frozenset[str]
    old: frozenset[str]
    base_version: str
    adapter_exit: int
    adapter_output: str

    @property
    def base(self) -> Path:
        return self.root / "base"

    @property
    def registry(self) -> Path:
        return self.root / "registry"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.jsonl"

    def copy_to(self, dest: Path) -> BaseAndAdapter:
        """A private copy under ``dest`` (tests publish into the registry; the registry keeps
        paths relative to its root, so a copied one works as is)."""
        shutil.copytree(self.root, dest, dirs_exist_ok=True)
        return replace(self, root=dest)


def train_base_and_adapter(root: Path) -> BaseAndAdapter:
    """Train the ci base on the synthetic catalog minus its fresh items, publish and promote it,
    then run ``tandem train adapter --registry`` for the fresh items (as ``test_adapter_ci`` did)."""
    from typer.testing import CliRunner

    from tandem.catalog.datasets import is_fresh
    from tandem.catalog.queries import write_queries
    from tandem.registry import ArtifactKind, Registry
    from tandem_app.cli import app

    data = synthetic_catalog(N_ITEMS)
    fresh = frozenset(it.item_id for it in data.items if is_fresh(it.item_id))
    old = frozenset(it.item_id for it in data.items) - fresh
    base_catalog = jsonl(root / "base.jsonl", [it for it in data.items if it.item_id in old])
    catalog = jsonl(root / "catalog.jsonl", data.items)
    queries, qrels = root / "q.tsv", root / "qrels.txt"
    write_queries(data.train_queries, queries)
    qrels.write_text("".join(f"{q} 0 {i} {g}\n" for q, rel in data.train_qrels.items() for i, g in rel.items()))

    base = root / "base"
    res = CliRunner().invoke(app, ["train", "generative", "--profile", "ci", "--catalog", str(base_catalog),
                                   "--train-queries", str(queries), "--train-qrels", str(qrels), "--out", str(base),
                                   "--seed", "13", "--device", "cpu", "--no-progress", "--set", "threads=1"])
    assert res.exit_code == 0, res.output
    base_v = Registry(str(root / "registry")).publish(ArtifactKind.BASE_MODEL, base, promote=True)

    res = CliRunner().invoke(app, ["train", "adapter", "--registry", str(root / "registry"), "--catalog",
                                   str(catalog), "--out", str(root / "adapter"), "--no-progress", "--set", "threads=1",
                                   "--set", "device=cpu", "--max-forgetting", "0.05", *ADAPTER_ARGS])
    return BaseAndAdapter(root, data, fresh, old, base_v, res.exit_code, res.output)
