"""The monthly merge step of the base pipeline (issue 21 item 3): start from the registry's
current base with its adapter folded in and distilled (:mod:`tandem.training.tree_merge`)
instead of training from scratch, so every item the adapter added is in the new base, every
existing item keeps its ID, and the adapter chain of the new base starts empty.

``merge_previous`` is the step and ``merge_previous_base`` its KFP component, which fails the
run when the merge's own gate fails (an ID moved, or old/added R@k fell by more than
``MERGE_TOLERANCE``). ``merge_pipeline`` is the monthly base pipeline starting from the merge:
the base pipeline's own components (snapshot, learned fusion on the new model, evaluation,
promotion gate, register) around it in place of semantic IDs + training
(``tandem pipelines run merge``; compiled to ``pipelines/compiled/merge.yaml``).
``adapter_chain`` says which adapters serving would put on the current base: none once the
merged base is promoted, since every adapter names its own base as parent.
"""

# No `from __future__ import annotations`: KFP reads the component's annotations as types.
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from tandem.registry.promotion import DEFAULT_MIN_EXACT_MATCH, DEFAULT_NDCG_TOLERANCE
from tandem_pipelines import components as c
from tandem_pipelines.base import TRAIN_CPU, TRAIN_MEMORY, publish_steps
from tandem_pipelines.components import component
from tandem_pipelines.fusion_step import DEFAULT_MAX_QUERIES

PIPELINE_NAME = "tandem-base-merge"
MERGE_TOLERANCE = 0.01
"""Most old-item or added-item R@k may fall from base + adapter to the merged base (1 point)."""


def adapter_chain(registry: Any) -> list[str]:
    """``adapter:<version>`` references serving would attach to the current base: the current
    adapter when it was made for that base (the registry keeps one adapter pointer; each hourly
    adapter covers every item added since its base), else none."""
    from tandem.registry import ArtifactKind

    base = registry.current(ArtifactKind.BASE_MODEL)
    adapter = registry.current(ArtifactKind.ADAPTER)
    if base is None or adapter is None:
        return []
    parents = registry.manifest(ArtifactKind.ADAPTER, adapter).parents
    return [f"adapter:{adapter}"] if f"base-model:{base}" in parents else []


def merge_previous(registry_uri: str, snapshot_dir: Path, model_out: Path, ids_out: Path, seed: int,
                   overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fold the current adapter into the current base and distil (see the module docstring);
    the new base goes to ``model_out`` and its ID map to ``ids_out``. Items of the snapshot
    that neither knows yet are counted (``not_covered``): the next hourly adapter on the new
    base adds them."""
    from tandem.catalog.loaders import load_items
    from tandem.errors import InvalidInput
    from tandem.ids.idmap import IdMap
    from tandem.registry import ArtifactKind, Registry
    from tandem.training.tree_merge import MergeConfig, merge_base
    from tandem_pipelines.steps import CATALOG

    reg = Registry(registry_uri or None)
    base_v = reg.current(ArtifactKind.BASE_MODEL)
    if base_v is None:
        raise InvalidInput("`start_from` merge needs a current base-model in the registry; run with scratch first")
    chain = adapter_chain(reg)
    items = load_items(snapshot_dir / CATALOG, strict=True).items
    with tempfile.TemporaryDirectory() as tmp:
        base_dir = reg.download(ArtifactKind.BASE_MODEL, base_v, Path(tmp) / "base")
        adapter_dir = (reg.download(ArtifactKind.ADAPTER, chain[0].split(":", 1)[1], Path(tmp) / "adapter")
                       if chain else None)
        cfg = MergeConfig(**{"seed": seed, **(overrides or {})})
        summary = merge_base(Path(base_dir), Path(adapter_dir) if adapter_dir else None, items, model_out, cfg)
    shutil.copytree(model_out / "idmap", ids_out, dirs_exist_ok=True)
    known = set(IdMap.load(str(ids_out)).item_ids())
    summary |= {"base": f"base-model:{base_v}", "adapter": chain[0] if chain else "",
                "not_covered": sum(1 for it in items if it.item_id not in known)}
    return summary


def merge_gate(summary: dict[str, Any], tolerance: float = MERGE_TOLERANCE) -> dict[str, Any]:
    """The merge's own acceptance: IDs unchanged and old/added R@k each within ``tolerance``
    of base + adapter before the merge."""
    k = summary["config"]["eval_k"]
    m = summary["metrics"]
    drops = {"old": m[f"old_r{k}_before"] - m[f"old_r{k}"], "added": m[f"added_r{k}_before"] - m[f"added_r{k}"]}
    ok = bool(m["ids_unchanged"]) and all(d <= tolerance for d in drops.values())
    return {"pass": ok, "drops": drops, "ids_unchanged": bool(m["ids_unchanged"]), "tolerance": tolerance}


@component
def merge_previous_base(snapshot: Input[Dataset], registry_uri: str, seed: int, model: Output[Model],
                        id_map: Output[Artifact]) -> None:
    """The registry's current base with its adapter folded in and distilled (the monthly merge)."""
    from pathlib import Path

    from tandem.errors import TandemError
    from tandem_pipelines.merge_step import merge_gate, merge_previous

    summary = merge_previous(registry_uri, Path(snapshot.path), Path(model.path), Path(id_map.path), seed)
    gate = merge_gate(summary)
    model.metadata.update({"merge": summary["metrics"], "gate": gate, "base": summary["base"],
                           "adapter": summary["adapter"], "not_covered": summary["not_covered"]})
    id_map.metadata.update({"from": summary["base"], "adapter": summary["adapter"]})
    if not gate["pass"]:
        raise TandemError(f"the merge changed IDs or lost recall beyond {gate['tolerance']}: {gate}")


@dsl.pipeline(name=PIPELINE_NAME, description="Monthly Tandem base from the previous base with its adapter "
              "merged and distilled: snapshot, merge, learned fusion, dev evaluation, promotion gate, registry.")
def merge_pipeline(
    snapshot_uri: str,
    train_queries_uri: str,
    train_qrels_uri: str,
    dev_queries_uri: str,
    dev_qrels_uri: str,
    registry_uri: str = "",
    seed: int = 13,
    ndcg_tolerance: float = DEFAULT_NDCG_TOLERANCE,
    min_exact_match: float = DEFAULT_MIN_EXACT_MATCH,
    fusion_max_queries: int = DEFAULT_MAX_QUERIES,
) -> None:
    """The base pipeline's parameters (``profile`` and the model size do not apply: the
    merged base keeps the previous one's architecture and size)."""
    snap = c.snapshot_catalog(
        snapshot_uri=snapshot_uri, train_queries_uri=train_queries_uri, train_qrels_uri=train_qrels_uri,
        dev_queries_uri=dev_queries_uri, dev_qrels_uri=dev_qrels_uri, profile="ci", model_size="",
        ndcg_tolerance=ndcg_tolerance, min_exact_match=min_exact_match, architecture="tree",
        fusion_max_queries=fusion_max_queries,
    ).set_display_name("snapshot catalog")
    snap.set_caching_options(False)
    merge = merge_previous_base(snapshot=snap.outputs["snapshot"], registry_uri=registry_uri, seed=seed)
    merge.set_display_name("merge previous base").set_caching_options(False)
    merge.set_cpu_request(TRAIN_CPU).set_memory_request(TRAIN_MEMORY).set_memory_limit(TRAIN_MEMORY)
    publish_steps(snap, merge.outputs["model"], merge.outputs["id_map"], registry_uri=registry_uri, seed=seed,
                  ndcg_tolerance=ndcg_tolerance, min_exact_match=min_exact_match,
                  fusion_max_queries=fusion_max_queries)
