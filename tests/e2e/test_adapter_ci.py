"""The hourly adapter end to end on the ``ci`` profile, through the CLI and the registry.

The ci base is trained on the synthetic catalog minus its fresh items (BENCHMARK.md's split,
``is_fresh``); ``tandem train adapter --registry`` then finds the items the base lacks,
trains a LoRA adapter (v2: on the ID decoder, plus the new items' embeddings) with replay of old items, gates it on forgetting and promotes it. Measured on
the held-out dev queries (phrasings never trained on): fresh-item R@10 rises from 0 to a
pinned golden figure; old-item R@10 drops by at most 2 points.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.catalog.datasets import is_fresh
from tandem.catalog.queries import write_queries
from tandem_app.cli import app
from tandem_testing.synthetic_catalog import synthetic_catalog

pytestmark = pytest.mark.e2e

N_ITEMS = 600
K = 10
#: Measured with these seeds on the 2-core build machine with the v2 base (pretrained encoder +
#: ID tree): every fresh item's dev query finds it in the top 10 (the v1 T5 base reached 0.879).
GOLDEN_FRESH_R10 = 1.0
TOLERANCE = 0.05
MAX_OLD_DROP = 0.02
#: The replay share and pseudo-queries per item this acceptance runs with. The chapter's
#: 80/20 (the CLI default) costs this small base several points of old-item R@10; half
#: replay with 8 pseudo-queries per new item (4 per replayed old one) loses none here
#: (measured: old R@10 0.875 -> 0.880). ``python -m bench.adapter`` reports the variants.
ADAPTER_ARGS = ["--replay", "0.5", "--set", "queries_per_item=8"]


def _jsonl(path: Path, items: list) -> Path:
    path.write_text("".join(json.dumps(it.model_dump(exclude_none=True)) + "\n" for it in items))
    return path


def _recall(retriever, data, ids: set[str]) -> float:
    from tandem.eval import evaluate, run_retriever

    qrels = {q: r for q, r in data.dev_qrels.items() if next(iter(r)) in ids}
    run = run_retriever(retriever, {q: data.dev_queries[q] for q in qrels}, k=K)
    return evaluate(run, qrels, [f"R(rel=4)@{K}"]).metrics[f"R(rel=4)@{K}"]


def test_adapter_makes_fresh_items_retrievable_without_forgetting(tmp_path: Path) -> None:
    from tandem.generative import load_retriever
    from tandem.registry import ArtifactKind, Registry

    data = synthetic_catalog(N_ITEMS)
    fresh = {it.item_id for it in data.items if is_fresh(it.item_id)}
    old = {it.item_id for it in data.items} - fresh
    assert 20 <= len(fresh) <= 45
    base_catalog = _jsonl(tmp_path / "base.jsonl", [it for it in data.items if it.item_id in old])
    catalog = _jsonl(tmp_path / "catalog.jsonl", data.items)
    queries, qrels = tmp_path / "q.tsv", tmp_path / "qrels.txt"
    write_queries(data.train_queries, queries)
    qrels.write_text("".join(f"{q} 0 {i} {g}\n" for q, rel in data.train_qrels.items() for i, g in rel.items()))

    base = tmp_path / "base"
    res = CliRunner().invoke(app, ["train", "generative", "--profile", "ci", "--catalog", str(base_catalog),
                                   "--train-queries", str(queries), "--train-qrels", str(qrels), "--out", str(base),
                                   "--seed", "13", "--device", "cpu", "--no-progress", "--set", "threads=1"])
    assert res.exit_code == 0, res.output
    reg = Registry(str(tmp_path / "registry"))
    base_v = reg.publish(ArtifactKind.BASE_MODEL, base, promote=True)

    before = load_retriever(base, device="cpu", num_beams=K)
    fresh_before, old_before = _recall(before, data, fresh), _recall(before, data, old)
    assert fresh_before == 0.0  # the base cannot name items it never saw
    before.close()

    out = tmp_path / "adapter"
    res = CliRunner().invoke(app, ["train", "adapter", "--registry", str(tmp_path / "registry"), "--catalog",
                                   str(catalog), "--out", str(out), "--no-progress", "--set", "threads=1",
                                   "--set", "device=cpu", "--max-forgetting", "0.05", *ADAPTER_ARGS])
    assert res.exit_code == 0, res.output
    assert f"{len(fresh)} new/changed items" in res.output and "promoted to current" in res.output

    adapter_v = reg.current(ArtifactKind.ADAPTER)
    assert adapter_v is not None
    assert reg.manifest(ArtifactKind.ADAPTER, adapter_v).parents == [f"base-model:{base_v}"]
    art = reg.resolve_current(ArtifactKind.ADAPTER)
    after = load_retriever(base, adapter=art.local_path, device="cpu", num_beams=K)
    fresh_after, old_after = _recall(after, data, fresh), _recall(after, data, old)
    print(f"fresh R@10 {fresh_before:.4f} -> {fresh_after:.4f}; old R@10 {old_before:.4f} -> {old_after:.4f}")
    assert fresh_after == pytest.approx(GOLDEN_FRESH_R10, abs=TOLERANCE)
    assert old_before - old_after <= MAX_OLD_DROP
