"""The base pipeline's PyTorchJob training step: the manifest validates offline against the shipped CRD subset."""

from __future__ import annotations

import pytest

from tandem.errors import InvalidInput
from tandem_pipelines.pytorchjob import render_pytorchjob, train_args, validate_pytorchjob


def _job(workers: int = 3, gpus: int = 0) -> dict:
    return render_pytorchjob("tandem-train-abc", workers, train_args("/shared/x", "ci", 13, {"threads": 1}),
                             gpus=gpus)


def test_rendered_pytorchjob_validates_and_splits_master_and_workers() -> None:
    job = _job(3, gpus=1)
    validate_pytorchjob(job)
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert (specs["Master"]["replicas"], specs["Worker"]["replicas"]) == (1, 2)
    pod = specs["Worker"]["template"]["spec"]["containers"][0]
    assert pod["name"] == "pytorch" and pod["command"] == ["tandem"]
    assert pod["args"][:2] == ["train", "generative"] and "--out" in pod["args"] and "threads=1" in pod["args"]
    assert pod["resources"]["limits"]["nvidia.com/gpu"] == 1


@pytest.mark.parametrize("field, value, where", [
    ("kind", "TFJob", "kind"), ("apiVersion", "kubeflow.org/v2", "apiVersion")])
def test_invalid_manifests_are_named(field: str, value: str, where: str) -> None:
    job = _job()
    job[field] = value
    with pytest.raises(InvalidInput, match=where):
        validate_pytorchjob(job)
    job = _job()
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["restartPolicy"] = "Sometimes"
    with pytest.raises(InvalidInput, match="Worker/restartPolicy"):
        validate_pytorchjob(job)
    del job["spec"]["pytorchReplicaSpecs"]["Master"]
    with pytest.raises(InvalidInput, match="Master"):
        validate_pytorchjob(job)


def test_one_worker_is_not_a_job() -> None:
    with pytest.raises(InvalidInput, match="training_workers"):
        _job(1)
