"""The monthly merge end to end on the ``ci`` profile, through the registry (issue 21 item 3).

As in ``test_adapter_ci`` (the same base and adapter, trained once per session by
``tandem_testing.ci_adapter``): a ci base trained on the synthetic catalog minus its fresh items,
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

from tandem_testing.ci_adapter import K, BaseAndAdapter, recall

pytestmark = pytest.mark.e2e

TOLERANCE = 0.02
"""Most R@10 (fresh or old, dev queries) may drop from base + adapter to the merged base."""


def test_monthly_merge_keeps_ids_and_recall_and_empties_the_chain(ci_base_and_adapter: BaseAndAdapter,
                                                                   tmp_path: Path) -> None:
    from tandem.errors import CorruptArtifact
    from tandem.generative import load_retriever
    from tandem.generative.tree_adapter import attach_tree_adapter
    from tandem.generative.tree_artifact import load_tree_model
    from tandem.ids.idmap import IdMap
    from tandem.registry import ArtifactKind, Registry
    from tandem_pipelines.merge_step import adapter_chain, merge_gate, merge_previous
    from tandem_pipelines.steps import CATALOG

    # the base and the adapter CLI run of the session fixture, on a private copy (this test publishes)
    run = ci_base_and_adapter.copy_to(tmp_path / "run")
    data, fresh, old, base, catalog, registry = run.data, set(run.fresh), set(run.old), run.base, run.catalog, run.registry
    assert run.adapter_exit == 0 and "promoted to current" in run.adapter_output, run.adapter_output
    reg = Registry(str(registry))
    (chain,) = adapter_chain(reg)
    adapter = reg.resolve_current(ArtifactKind.ADAPTER).local_path
    before = load_retriever(base, adapter=adapter, device="cpu", num_beams=K)
    fresh_before, old_before = recall(before, data, fresh), recall(before, data, old)
    before.close()

    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    shutil.copy(catalog, snapshot / CATALOG)
    merged, ids = tmp_path / "merged", tmp_path / "merged-ids"
    summary = merge_previous(str(registry), snapshot, merged, ids, seed=13, overrides={"device": "cpu"})
    assert summary["adapter"] == chain and summary["added_items"] == len(fresh) and summary["not_covered"] == 0
    assert merge_gate(summary, tolerance=TOLERANCE)["pass"], summary["metrics"]
    after = load_retriever(merged, device="cpu", num_beams=K)
    fresh_after, old_after = recall(after, data, fresh), recall(after, data, old)
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
