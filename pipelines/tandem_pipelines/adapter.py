"""The hourly adapter pipeline: changes since the current base → adapter training (reserved-
space IDs, LoRA with replay) → new-item and forgetting checks → gate → registry.

An hour without new or changed items ends after the first step (the training branch runs
only when it counted some). Every step reads moving data (the catalog, the registry's
current base) or depends on one that does, so KFP's cache is off throughout: a cached
"changes" step would train on the last hour's items forever.
"""

# No `from __future__ import annotations`: KFP reads the annotations as types.
from collections.abc import Callable
from typing import Any

from kfp import dsl

from tandem.registry.promotion import DEFAULT_MAX_FORGETTING
from tandem_pipelines import components as c

PIPELINE_NAME = "tandem-adapter"
TRAIN_CPU = "2"
TRAIN_MEMORY = "6G"


def make_adapter_pipeline(
    gpus: int = 0, train_cpu: str = TRAIN_CPU, train_memory: str = TRAIN_MEMORY
) -> Callable[..., Any]:
    """The adapter pipeline with the training task's resources fixed at compile time
    (``gpus`` > 0 requests NVIDIA GPUs; ``pipelines/compiled/adapter.yaml`` is the CPU variant)."""

    @dsl.pipeline(name=PIPELINE_NAME, description="Hourly Tandem adapter: items added since the current base, "
                  "LoRA adapter with replay, new-item and forgetting checks, promotion gate, registry.")
    def adapter_pipeline(
        catalog_uri: str,
        new_items_uri: str = "",
        registry_uri: str = "",
        seed: int = 13,
        replay: float = 0.35,
        queries_per_item: int = 4,
        max_forgetting: float = DEFAULT_MAX_FORGETTING,
        min_new_recall: float = 0.5,
    ) -> None:
        """``new_items_uri`` empty = the catalog's items the current base does not know;
        ``registry_uri`` empty = ``TANDEM_ARTIFACTS_URI`` of the step's environment;
        ``replay`` = share of old-item examples (0.35: the share measured to meet both
        fresh-item bars on a v2 base, see ``AdapterConfig.replay_source``; v1 bases also forget
        less with more than the chapter's 0.2); ``queries_per_item`` = pseudo-queries
        per new item."""
        changes = c.adapter_changes(catalog_uri=catalog_uri, new_items_uri=new_items_uri, registry_uri=registry_uri,
                                    max_forgetting=max_forgetting, min_new_recall=min_new_recall)
        changes.set_display_name("changes since the base").set_caching_options(False)
        with dsl.If(changes.outputs["Output"] > 0, name="new items"):
            train = c.train_adapter(changes=changes.outputs["changes"], base_model=changes.outputs["base_model"],
                                    seed=seed, replay=replay, queries_per_item=queries_per_item)
            train.set_display_name("train adapter")
            train.set_caching_options(False)
            train.set_cpu_request(train_cpu).set_memory_request(train_memory).set_memory_limit(train_memory)
            if gpus:
                train.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
            gate = c.adapter_gate(summary_json=train.outputs["summary_json"], max_forgetting=max_forgetting,
                                  min_new_recall=min_new_recall)
            gate.set_display_name("promotion gate").set_caching_options(False)
            reg = c.register_adapter(adapter=train.outputs["adapter"], summary_json=train.outputs["summary_json"],
                                     decision=gate.outputs["decision"], registry_uri=registry_uri)
            reg.set_display_name("register").set_caching_options(False)

    return adapter_pipeline


adapter_pipeline = make_adapter_pipeline()
"""The CPU variant that ``tandem pipelines compile`` writes to ``pipelines/compiled/adapter.yaml``."""
