"""Corrective samples of the failed-query cycle reach the hourly tree adapter (issue 22 item 2):
``train_tree_adapter(extra_pairs=...)`` trains on (query, item id) pairs with replay, also in
an hour without new items, and the served adapter answers the corrective queries. (Integration
tier: it trains a micro v2 model first.)"""

from __future__ import annotations

from pathlib import Path

from tandem_testing.tiny_catalog import tiny_catalog


def test_tree_adapter_trains_on_corrective_pairs_without_new_items(tmp_path: Path) -> None:
    from tandem.generative.tree_retriever import TreeRetriever
    from tandem.training.adapter import adapter_config
    from tandem.training.tree_adapter_train import train_tree_adapter
    from tandem.training.tree_config import tree_profile
    from tandem.training.tree_run import train_tree

    items = tiny_catalog()
    base = tmp_path / "model"
    cfg = tree_profile("ci", memorise_epochs=2, align_epochs=1, lora_epochs=0, batch_size=8)
    train_tree(items, [("cordless drill", "t01"), ("paint roller", "t13")], base, cfg, echo=lambda _: None)
    pairs = [("qwzx blorp", "t23"), ("vrrm kloop", "t18"), ("unknown item", "nope")]  # the last is skipped
    summary = train_tree_adapter(base, [], items, tmp_path / "adapter",
                                 adapter_config({"tree_epochs": 20, "batch_size": 8, "tree_lr": 3e-3, "replay": 0.5}),
                                 extra_pairs=pairs, echo=lambda _: None)
    c = summary["corrective"]
    assert summary["examples_corrective"] == 2 and summary["new_items"] == 0 and c["pairs"] == 2
    assert c["r10"] >= c["r10_before"] and c["r10"] == 1.0, c
    r = TreeRetriever(base, adapter=tmp_path / "adapter", num_beams=10, device="cpu")
    assert [any(h.item_id == want for h in hits) for hits, want in
            zip(r.retrieve(["qwzx blorp", "vrrm kloop"], 10), ("t23", "t18"), strict=True)] == [True, True]
