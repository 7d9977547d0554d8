"""The monthly merge's pipeline parts (issue 21 item 3): its gate, the adapter chain the
registry implies, and the compiled merge pipeline. The merge itself runs in
tests/e2e/test_merge_ci.py (it trains a base and an adapter first)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tandem.registry import ArtifactKind, Registry
from tandem_pipelines.merge_step import adapter_chain, merge_gate


def _summary(old: float, added: float, ids: bool = True) -> dict:
    return {"config": {"eval_k": 10}, "metrics": {"old_r10_before": 0.9, "old_r10": old, "added_r10_before": 1.0,
                                                  "added_r10": added, "ids_unchanged": float(ids)}}


def test_merge_gate_holds_ids_and_both_recalls_to_the_tolerance() -> None:
    assert merge_gate(_summary(0.895, 0.995))["pass"]
    assert not merge_gate(_summary(0.88, 1.0))["pass"]  # old items lost 2 points
    assert not merge_gate(_summary(0.9, 0.98))["pass"]  # added items lost 2 points
    assert not merge_gate(_summary(0.95, 1.0, ids=False))["pass"]  # an ID moved
    assert merge_gate(_summary(0.88, 1.0), tolerance=0.05)["pass"]


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "weights.bin").write_text(text)
    return path


def test_adapter_chain_is_the_current_adapter_of_the_current_base_only(tmp_path: Path) -> None:
    reg = Registry(str(tmp_path / "registry"))
    assert adapter_chain(reg) == []
    base = reg.publish(ArtifactKind.BASE_MODEL, _folder(tmp_path / "b1", "base 1"), promote=True)
    adapter = reg.publish(ArtifactKind.ADAPTER, _folder(tmp_path / "a1", "adapter 1"),
                          parents=[f"base-model:{base}"], promote=True)
    assert adapter_chain(reg) == [f"adapter:{adapter}"]
    reg.publish(ArtifactKind.BASE_MODEL, _folder(tmp_path / "b2", "merged"), promote=True,
                parents=[f"base-model:{base}", f"adapter:{adapter}"])
    assert adapter_chain(reg) == []  # the merged base starts with an empty chain


def test_compiled_merge_pipeline_merges_instead_of_training() -> None:
    from tandem_pipelines.schedule import COMPILED_DIR

    spec = yaml.safe_load((COMPILED_DIR / "merge.yaml").read_text())
    tasks = spec["root"]["dag"]["tasks"]
    names = {t["componentRef"]["name"].removeprefix("comp-") for t in tasks.values()}
    assert names == {"snapshot-catalog", "merge-previous-base", "train-fusion", "evaluate-model", "promotion-gate",
                     "register-base"}
    assert set(tasks["train-fusion"]["dependentTasks"]) == {"snapshot-catalog", "merge-previous-base"}
    assert tasks["register-base"]["inputs"]["artifacts"]["id_map"]["taskOutputArtifact"]["producerTask"] == \
        "merge-previous-base"
    for name in ("snapshot-catalog", "merge-previous-base", "promotion-gate", "register-base"):
        assert tasks[name]["cachingOptions"].get("enableCache") is not True, name
