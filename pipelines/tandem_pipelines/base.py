"""The monthly base pipeline: snapshot → semantic IDs → pseudo-queries and BM25-hard negatives →
staged training → learned fusion (BM25 + the new model) and evaluation → gate → registry (the
model and its fusion model, promoted together).

Parameters are the run's inputs (snapshot and query-set URIs, profile, seed, thresholds,
registry URI). Steps that read moving data (the catalog snapshot, the registry's current
pointer) never hit KFP's cache: a cached snapshot would silently retrain on last month's
catalog, a cached gate would compare against a base that is no longer current.
"""

# No `from __future__ import annotations`: KFP reads the annotations as types.
from collections.abc import Callable
from typing import Any

from kfp import dsl

from tandem.registry.promotion import DEFAULT_MIN_EXACT_MATCH, DEFAULT_NDCG_TOLERANCE
from tandem_pipelines import components as c
from tandem_pipelines.fusion_step import DEFAULT_MAX_QUERIES

PIPELINE_NAME = "tandem-base"
TRAIN_CPU = "2"
TRAIN_MEMORY = "8G"


def make_base_pipeline(
    gpus: int = 0, train_cpu: str = TRAIN_CPU, train_memory: str = TRAIN_MEMORY, training_workers: int = 1,
    training_pvc: str = "tandem-training", training_namespace: str = "kubeflow",
) -> Callable[..., Any]:
    """The base pipeline with the training task's resources fixed at compile time.

    ``gpus`` > 0 requests that many NVIDIA GPUs for training (the trainer uses CUDA when
    present); the checked-in ``pipelines/compiled/base.yaml`` is the CPU variant.
    ``training_workers`` > 1 runs v2 training as a Kubeflow Training Operator ``PyTorchJob``
    of that many replicas (each with these resources) sharing the PVC ``training_pvc``
    (:mod:`tandem_pipelines.pytorchjob`); 1 keeps the single-pod step.
    """

    @dsl.pipeline(name=PIPELINE_NAME, description="Monthly Tandem base model: snapshot, semantic IDs, staged "
                  "generative training, learned fusion, dev evaluation, promotion gate, registry.")
    def base_pipeline(
        snapshot_uri: str,
        train_queries_uri: str,
        train_qrels_uri: str,
        dev_queries_uri: str,
        dev_qrels_uri: str,
        registry_uri: str = "",
        profile: str = "ci",
        model_size: str = "",
        architecture: str = "tree",
        seed: int = 13,
        ndcg_tolerance: float = DEFAULT_NDCG_TOLERANCE,
        min_exact_match: float = DEFAULT_MIN_EXACT_MATCH,
        fusion_max_queries: int = DEFAULT_MAX_QUERIES,
    ) -> None:
        """``registry_uri`` empty = ``TANDEM_ARTIFACTS_URI`` of the step's environment;
        ``fusion_max_queries`` = judged training queries (a seeded sample) the learned fusion
        is fitted on, published with the model and promoted with it;
        ``architecture`` ``tree`` = the v2 generative retriever (pretrained encoder + ID-tree
        decoder), ``t5`` = the v1 from-scratch T5, whose size ``model_size`` picks (empty = the
        profile's, else a preset ``ci`` or ``full``)."""
        snap = c.snapshot_catalog(
            snapshot_uri=snapshot_uri, train_queries_uri=train_queries_uri, train_qrels_uri=train_qrels_uri,
            dev_queries_uri=dev_queries_uri, dev_qrels_uri=dev_qrels_uri, profile=profile, model_size=model_size,
            ndcg_tolerance=ndcg_tolerance, min_exact_match=min_exact_match, architecture=architecture,
            fusion_max_queries=fusion_max_queries,
        ).set_display_name("snapshot catalog")
        snap.set_caching_options(False)
        ids = c.build_semantic_ids(snapshot=snap.outputs["snapshot"], profile=profile, seed=seed,
                                   architecture=architecture)
        ids.set_display_name("semantic IDs")
        prep = c.prepare_training_data(snapshot=snap.outputs["snapshot"], profile=profile, seed=seed,
                                       architecture=architecture)
        prep.set_display_name("pseudo-queries and hard negatives")
        if training_workers > 1:
            train = _pytorchjob_step(snap, ids, profile, model_size, seed, training_workers, training_namespace,
                                     training_pvc, train_cpu, train_memory, gpus)
        else:
            train = c.train_generative(snapshot=snap.outputs["snapshot"], id_map=ids.outputs["id_map"],
                                       training_data=prep.outputs["training_data"], profile=profile,
                                       model_size=model_size, seed=seed, architecture=architecture
                                       ).set_display_name("train generative")
            train.set_cpu_request(train_cpu).set_memory_request(train_memory).set_memory_limit(train_memory)
            if gpus:
                train.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
        publish_steps(snap, train.outputs["model"], ids.outputs["id_map"], registry_uri=registry_uri, seed=seed,
                      ndcg_tolerance=ndcg_tolerance, min_exact_match=min_exact_match,
                      fusion_max_queries=fusion_max_queries, train_cpu=train_cpu, train_memory=train_memory, gpus=gpus)

    return base_pipeline


def _pytorchjob_step(snap: Any, ids: Any, profile: Any, model_size: Any, seed: Any, workers: int, namespace: str,
                     pvc: str, cpu: str, memory: str, gpus: int) -> Any:
    """The training task that submits a ``PyTorchJob`` and waits for it (v2 only: the job runs
    ``tandem train generative``, whose distributed path is the tree trainer's)."""
    from tandem.errors import InvalidInput
    from tandem_pipelines.pytorchjob import SHARED_MOUNT, train_generative_pytorchjob

    try:
        from kfp import kubernetes  # kfp-kubernetes: mounts the shared PVC on the submitting task
    except ImportError:
        raise InvalidInput("`training_workers` > 1 needs the `kfp-kubernetes` package (pip install "
                           "kfp-kubernetes) to mount the shared training volume") from None

    task = train_generative_pytorchjob(snapshot=snap.outputs["snapshot"], id_map=ids.outputs["id_map"],
                                       profile=profile, model_size=model_size, seed=seed, workers=workers,
                                       namespace=namespace, pvc=pvc, cpu=cpu, memory=memory, gpus=gpus)
    task.set_display_name(f"train generative (PyTorchJob x{workers})")
    kubernetes.mount_pvc(task, pvc_name=pvc, mount_path=SHARED_MOUNT)
    return task


def publish_steps(snap: Any, model: Any, id_map: Any, *, registry_uri: Any, seed: Any, ndcg_tolerance: Any,
                  min_exact_match: Any, fusion_max_queries: Any, train_cpu: str = TRAIN_CPU,
                  train_memory: str = TRAIN_MEMORY, gpus: int = 0) -> None:
    """What follows a new base ``model`` (trained, or merged: ``tandem_pipelines.merge_step``):
    learned fusion on it, dev evaluation, promotion gate, register."""
    fusion = c.train_fusion(snapshot=snap.outputs["snapshot"], model=model,
                            max_queries=fusion_max_queries, seed=seed).set_display_name("train fusion")
    # It runs the new model over every candidate of thousands of queries: training's resources.
    fusion.set_cpu_request(train_cpu).set_memory_request(train_memory).set_memory_limit(train_memory)
    if gpus:
        fusion.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
    ev = c.evaluate_model(snapshot=snap.outputs["snapshot"], model=model)
    ev.set_display_name("evaluate")
    gate = c.promotion_gate(evaluation=ev.outputs["evaluation"], registry_uri=registry_uri,
                            ndcg_tolerance=ndcg_tolerance, min_exact_match=min_exact_match)
    gate.set_display_name("promotion gate").set_caching_options(False)
    reg = c.register_base(snapshot=snap.outputs["snapshot"], id_map=id_map, model=model,
                          evaluation=ev.outputs["evaluation"], decision=gate.outputs["decision"],
                          fusion_model=fusion.outputs["fusion_model"], registry_uri=registry_uri)
    reg.set_display_name("register").set_caching_options(False)


base_pipeline = make_base_pipeline()
"""The CPU variant that ``tandem pipelines compile`` writes to ``pipelines/compiled/base.yaml``."""
