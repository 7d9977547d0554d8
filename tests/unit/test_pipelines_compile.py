"""The checked-in IR YAML is current, loads with the KFP SDK and wires the right components."""

from __future__ import annotations

from pathlib import Path

import yaml

from tandem_pipelines.schedule import COMPILED_DIR, compile_pipelines

COMPONENTS = {"snapshot-catalog", "build-semantic-ids", "prepare-training-data", "train-generative",
              "train-fusion", "evaluate-model", "promotion-gate", "register-base"}


def _strip_volatile(text: str) -> str:
    # The SDK version line changes with a kfp upgrade, which is not a pipeline change.
    return "\n".join(line for line in text.splitlines() if not line.startswith("sdkVersion:"))


def test_checked_in_yaml_is_not_stale(tmp_path: Path) -> None:
    written = compile_pipelines(tmp_path)
    assert sorted(p.name for p in written) == ["adapter.yaml", "base.yaml", "merge.yaml"]
    for fresh in written:
        checked_in = COMPILED_DIR / fresh.name
        assert checked_in.is_file(), "run `tandem pipelines compile`"
        assert _strip_volatile(fresh.read_text()) == _strip_volatile(checked_in.read_text()), (
            f"{checked_in} is stale: run `tandem pipelines compile` and commit the result"
        )


def test_yaml_loads_with_kfp_and_names_the_components() -> None:
    from kfp import components

    path = COMPILED_DIR / "base.yaml"
    loaded = components.load_component_from_file(str(path))
    assert loaded.name == "tandem-base"
    assert {"snapshot_uri", "profile", "model_size", "ndcg_tolerance", "min_exact_match", "registry_uri",
            "fusion_max_queries"} <= set(loaded.component_spec.inputs or {})
    spec = yaml.safe_load(path.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert {t["componentRef"]["name"].removeprefix("comp-") for t in tasks.values()} == COMPONENTS
    # The order of the DAG: each step consumes the previous one's outputs.
    assert tasks["register-base"]["dependentTasks"] == sorted(COMPONENTS - {"register-base", "prepare-training-data"})
    assert set(tasks["promotion-gate"]["dependentTasks"]) == {"evaluate-model"}
    assert set(tasks["train-generative"]["dependentTasks"]) == {"snapshot-catalog", "build-semantic-ids",
                                                                "prepare-training-data"}
    # Learned fusion is fitted on the new model right after training; register publishes it.
    assert set(tasks["train-fusion"]["dependentTasks"]) == {"snapshot-catalog", "train-generative"}
    assert "fusion_model" in tasks["register-base"]["inputs"]["artifacts"]
    # Moving data is never served from the cache; training gets its resources.
    for name in ("snapshot-catalog", "promotion-gate", "register-base"):
        assert tasks[name]["cachingOptions"].get("enableCache") is not True, name
    executors = spec["deploymentSpec"]["executors"]
    train = executors["exec-train-generative"]["container"]
    assert train["resources"]["cpuRequest"] == 2 and train["resources"]["memoryRequest"] == 8
    fusion = executors["exec-train-fusion"]["container"]
    assert fusion["resources"]["cpuRequest"] == 2 and fusion["resources"]["memoryRequest"] == 8
    for ex in executors.values():
        assert ex["container"]["image"].startswith("ghcr.io/tandem-search/tandem")
        assert "pip install" not in " ".join(ex["container"]["command"])  # nothing installed at run time


def test_gpu_variant_requests_accelerators(tmp_path: Path) -> None:
    from kfp import compiler

    from tandem_pipelines.base import make_base_pipeline

    out = tmp_path / "gpu.yaml"
    compiler.Compiler().compile(make_base_pipeline(gpus=1), str(out))
    executors = yaml.safe_load(out.read_text())["deploymentSpec"]["executors"]
    for name in ("exec-train-generative", "exec-train-fusion"):  # fusion runs the model over every candidate
        assert executors[name]["container"]["resources"]["accelerator"]["resourceCount"] == "1", name


ADAPTER_COMPONENTS = {"adapter-changes", "train-adapter", "adapter-gate", "register-adapter"}


def test_adapter_yaml_loads_and_trains_only_when_there_are_new_items() -> None:
    from kfp import components

    path = COMPILED_DIR / "adapter.yaml"
    loaded = components.load_component_from_file(str(path))
    assert loaded.name == "tandem-adapter"
    assert {"catalog_uri", "new_items_uri", "registry_uri", "max_forgetting", "min_new_recall"} <= set(
        loaded.component_spec.inputs or {})
    spec = yaml.safe_load(path.read_text())
    root = spec["root"]["dag"]["tasks"]
    assert root["adapter-changes"]["componentRef"]["name"] == "comp-adapter-changes"
    [branch] = [t for name, t in root.items() if name != "adapter-changes"]
    condition = branch["triggerPolicy"]["condition"]
    assert "adapter-changes" in condition and "> 0" in condition.replace("int(", "")  # train only with new items
    inner = spec["components"][branch["componentRef"]["name"]]["dag"]["tasks"]
    assert {t["componentRef"]["name"].removeprefix("comp-") for t in inner.values()} == ADAPTER_COMPONENTS - {
        "adapter-changes"}
    # Every step reads moving data or follows one that does: nothing comes from the cache.
    for name, task in {**root, **inner}.items():
        assert task.get("cachingOptions", {}).get("enableCache") is not True, name
    train = spec["deploymentSpec"]["executors"]["exec-train-adapter"]["container"]
    assert train["resources"]["cpuRequest"] == 2 and train["image"].startswith("ghcr.io/tandem-search/tandem")


def test_pytorchjob_variant_compiles_loads_and_mounts_the_shared_volume(tmp_path: Path) -> None:
    """``training_workers`` > 1: the training task submits a PyTorchJob (kfp-kubernetes mounts the PVC)."""
    from kfp import compiler, components

    from tandem_pipelines.base import make_base_pipeline

    out = tmp_path / "ddp.yaml"
    compiler.Compiler().compile(make_base_pipeline(training_workers=2, training_pvc="shared-train"), str(out))
    loaded = components.load_component_from_file(str(out))
    assert loaded.name == "tandem-base"
    docs = list(yaml.safe_load_all(out.read_text()))
    spec, platform = docs[0], docs[1] if len(docs) > 1 else {}
    tasks = spec["root"]["dag"]["tasks"]
    (train,) = [name for name in tasks if name.startswith("train-generative")]
    assert "train-fusion" in tasks and train in tasks["train-fusion"]["dependentTasks"]
    pvcs = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert any(m.get("pvcName") == "shared-train" or m.get("constant") == "shared-train"
               or "shared-train" in str(m) for ex in pvcs.values() for m in ex.get("pvcMount", [])), pvcs
