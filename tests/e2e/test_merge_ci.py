"""The monthly merge end to end on the ``ci`` profile, through the registry (issue 21 item 3).

As in ``test_adapter_ci`` (whose helpers it uses): a ci base trained on the synthetic catalog minus its fresh items,
an adapter for the fresh items promoted on it. The merge step then folds the adapter into
the base and distils; the merged base is published and promoted. Measured on the held-out
dev queries: fresh-item and old-item R@10 of the merged base each within TOLERANCE of base +
adapter; every ID unchanged; the adapter chain of the new base empty, and the old adapter
refused by it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tandem.catalog.datasets import is_fresh
from tandem.catalog.queries import write_queries
from tandem_app.cli import app
from tandem_testing.synthetic_catalog import synthetic_catalog
from test_adapter_ci import ADAPTER_ARGS, K, N_ITEMS, _jsonl, _recall

pytestmark = pytest.mark.e2e

TOLERANCE = 0.02
"""Most R@10 (fresh or old, dev queries) may drop from base + adapter to the merged base."""


def test_monthly_merge_keeps_ids_and_recall_and_empties_the_chain(tmp_path: Path) -> None:
    from tandem.errors import CorruptArtifact
    from tandem.generative import load_retriever
    from tandem.generative.tree_adapter import attach_tree_adapter
    from tandem.generative.tree_artifact import load_tree_model
    from tandem.ids.idmap import IdMap
    from tandem.registry import ArtifactKind, Registry
    from tandem_pipelines.merge_step import adapter_chain, merge_gate, merge_previous
    from tandem_pipelines.steps import CATALOG

    data = synthetic_catalog(N_ITEMS)
    fresh = {it.item_id for it in data.items if is_fresh(it.item_id)}
    old = {it.item_id for it in data.items} - fresh
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
    registry = tmp_path / "registry"
    reg = Registry(str(registry))
    reg.publish(ArtifactKind.BASE_MODEL, base, promote=True)
    res = CliRunner().invoke(app, ["train", "adapter", "--registry", str(registry), "--catalog", str(catalog),
                                   "--out", str(tmp_path / "adapter"), "--no-progress", "--set", "threads=1",
                                   "--set", "device=cpu", "--max-forgetting", "0.05", *ADAPTER_ARGS])
    assert res.exit_code == 0 and "promoted to current" in res.output, res.output
    (chain,) = adapter_chain(reg)
    adapter = reg.resolve_current(ArtifactKind.ADAPTER).local_path
    before = load_retriever(base, adapter=adapter, device="cpu", num_beams=K)
    fresh_before, old_before = _recall(before, data, fresh), _recall(before, data, old)
    before.close()

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    shutil.copy(catalog, snapshot / CATALOG)
    merged, ids = tmp_path / "merged", tmp_path / "merged-ids"
    summary = merge_previous(str(registry), snapshot, merged, ids, seed=13, overrides={"device": "cpu"})
    assert summary["adapter"] == chain and summary["added_items"] == len(fresh) and summary["not_covered"] == 0
    assert merge_gate(summary, tolerance=TOLERANCE)["pass"], summary["metrics"]
    after = load_retriever(merged, device="cpu", num_beams=K)
    fresh_after, old_after = _recall(after, data, fresh), _recall(after, data, old)
    after.close()
    print(f"fresh R@10 {fresh_before:.4f} -> {fresh_after:.4f}; old R@10 {old_before:.4f} -> {old_after:.4f}; "
          f"merge {summary['seconds']} s")
    assert fresh_before - fresh_after <= TOLERANCE and old_before - old_after <= TOLERANCE

    # IDs: every old item as in the previous base, every fresh one as the adapter assigned it
    previous, adapted, new_ids = (IdMap.load(str(p)) for p in (base / "idmap", adapter / "idmap", ids))
    assert all(new_ids.codes(i) == previous.codes(i) for i in previous.item_ids())
    assert all(new_ids.codes(i) == adapted.codes(i) for i in adapted.item_ids())
    assert set(new_ids.item_ids()) == old | fresh

    # the chain starts empty: the merged base is current, the old adapter is not for it
    reg.publish(ArtifactKind.BASE_MODEL, merged, promote=True, parents=[summary["base"], summary["adapter"]])
    assert adapter_chain(reg) == []
    with pytest.raises(CorruptArtifact, match="another base"):
        attach_tree_adapter(load_tree_model(merged), adapter)
