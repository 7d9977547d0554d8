"""The base pipeline's training step as a Kubeflow Training Operator ``PyTorchJob`` (``training_workers`` > 1).

The component copies the snapshot and the ID map onto a shared volume (a PVC every replica
mounts), submits a ``kubeflow.org/v1`` ``PyTorchJob`` of one Master and ``workers - 1``
Workers, waits for it and copies the model folder rank 0 wrote back into its output
artifact. Each replica runs one process, ``tandem train generative``, which sees the
``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` the operator sets and trains with
:class:`tandem.training.distributed.TorchDistributed` (gloo on CPU, NCCL with GPUs). The
manifest is rendered by :func:`render_pytorchjob` and checked offline against the CRD subset
shipped in ``crd/pytorchjob_v1.json`` (:func:`validate_pytorchjob`).
"""

# No `from __future__ import annotations`: KFP reads the component's annotations as types.
import json
import time
from pathlib import Path
from typing import Any

from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from tandem.errors import InvalidInput
from tandem_pipelines.components import IMAGE, component

SCHEMA = Path(__file__).parent / "crd" / "pytorchjob_v1.json"
GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
SHARED_MOUNT = "/shared"


def render_pytorchjob(name: str, workers: int, args: list[str], *, namespace: str = "kubeflow",
                      image: str = IMAGE, pvc: str = "tandem-training", cpu: str = "2", memory: str = "8G",
                      gpus: int = 0) -> dict[str, Any]:
    """The ``PyTorchJob`` manifest: ``workers`` replicas (one Master, the rest Workers), each
    running ``tandem <args>`` with the shared volume ``pvc`` at :data:`SHARED_MOUNT`."""
    if workers < 2:
        raise InvalidInput(f"`training_workers` must be at least 2 for a PyTorchJob, got {workers}")
    limits: dict[str, Any] = {"memory": memory, **({"nvidia.com/gpu": gpus} if gpus else {})}

    def replica(replicas: int) -> dict[str, Any]:
        return {"replicas": replicas, "restartPolicy": "OnFailure", "template": {"spec": {
            "containers": [{"name": "pytorch", "image": image, "command": ["tandem"], "args": list(args),
                            "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
                            "volumeMounts": [{"name": "shared", "mountPath": SHARED_MOUNT}]}],
            "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": pvc}}]}}}

    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PyTorchJob",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "tandem"}},
            "spec": {"runPolicy": {"cleanPodPolicy": "None"},
                     "pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(workers - 1)}}}


def validate_pytorchjob(manifest: dict[str, Any]) -> None:
    """Raise :class:`~tandem.errors.InvalidInput` naming the first field that breaks the shipped CRD subset."""
    import jsonschema

    try:
        jsonschema.validate(manifest, json.loads(SCHEMA.read_text()))
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise InvalidInput(f"PyTorchJob manifest: {where}: {exc.message}") from None


def submit_and_wait(manifest: dict[str, Any], *, timeout_s: float = 6 * 3600, poll_s: float = 15.0) -> str:
    """Create the job with the in-cluster kubernetes client and wait until it succeeds (its
    final condition type) or fails (raises with the operator's message)."""
    from kubernetes import client, config

    validate_pytorchjob(manifest)
    config.load_incluster_config()
    api = client.CustomObjectsApi()
    ns, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, manifest)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        conditions = (job.get("status") or {}).get("conditions") or []
        last = conditions[-1] if conditions else {}
        if last.get("type") == "Succeeded" and last.get("status") == "True":
            return "Succeeded"
        if last.get("type") == "Failed" and last.get("status") == "True":
            raise RuntimeError(f"PyTorchJob {ns}/{name} failed: {last.get('message', '')}")
        time.sleep(poll_s)
    raise TimeoutError(f"PyTorchJob {ns}/{name} did not finish within {timeout_s:.0f} s")


def train_args(work: str, profile: str, seed: int, overrides: dict[str, Any]) -> list[str]:
    """``tandem train generative`` arguments of every replica, on the shared folder ``work``."""
    from tandem_pipelines import steps

    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    snap = f"{work}/snapshot"
    return ["train", "generative", "--profile", profile, "--seed", str(seed), "--no-progress",
            "--catalog", f"{snap}/{steps.CATALOG}", "--train-queries", f"{snap}/{steps.TRAIN_QUERIES}",
            "--train-qrels", f"{snap}/{steps.TRAIN_QRELS}", "--ids", f"{work}/ids",
            "--dev-queries", f"{snap}/{steps.DEV_QUERIES}", "--dev-qrels", f"{snap}/{steps.DEV_QRELS}",
            "--out", f"{work}/model", *sets]


@component
def train_generative_pytorchjob(snapshot: Input[Dataset], id_map: Input[Artifact], profile: str, model_size: str,
                                seed: int, workers: int, namespace: str, pvc: str, cpu: str, memory: str, gpus: int,
                                model: Output[Model], training: Output[Metrics], curve: Output[HTML]) -> None:
    """v2 training as a ``PyTorchJob`` of ``workers`` replicas on the shared volume ``pvc`` (mounted
    here too, at the same path); the model folder rank 0 writes becomes this step's output."""
    import json as _json
    import shutil
    import uuid
    from pathlib import Path

    from tandem_pipelines import pytorchjob, steps

    name = f"tandem-train-{uuid.uuid4().hex[:10]}"
    work = Path(pytorchjob.SHARED_MOUNT) / name
    shutil.copytree(snapshot.path, work / "snapshot")
    shutil.copytree(id_map.path, work / "ids")
    overrides = {"fusion_holdout": steps.FUSION_HOLDOUT, **steps.size_overrides(model_size)}
    manifest = pytorchjob.render_pytorchjob(name, workers, pytorchjob.train_args(str(work), profile, seed, overrides),
                                            namespace=namespace, pvc=pvc, cpu=cpu, memory=memory, gpus=gpus)
    pytorchjob.submit_and_wait(manifest)
    shutil.copytree(work / "model", model.path, dirs_exist_ok=True)
    Path(curve.path).write_text(steps.training_report_html(Path(model.path)))
    summary = _json.loads((Path(model.path) / "training_summary.json").read_text())
    training.log_metric("memorisation_exact_match", float(summary["final_memorisation"]["exact_match"]))
    training.log_metric("train_seconds", float(summary["train_seconds"]))
    training.log_metric("world_size", float(summary.get("world_size", 1)))
    model.metadata.update({"profile": profile, "items": summary["items"], "device": summary["device"],
                           "workers": workers})
    shutil.rmtree(work, ignore_errors=True)
