"""The chart-pod launcher translates only host-specific parts of a rendered pod (no Helm needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tandem.errors import InvalidInput
from tandem_testing.chart_pods import PodPlan, local_pod


def _deployment(component: str, args: list[str], env: list[dict[str, Any]], port: int) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": f"tdm-tandem-{component}", "labels": {"app.kubernetes.io/component": component}},
        "spec": {"template": {"spec": {
            "containers": [{
                "name": component, "args": args, "env": env,
                "envFrom": [{"configMapRef": {"name": "tdm-tandem"}}],
                "ports": [{"name": "grpc", "containerPort": port}, {"name": "metrics", "containerPort": 9464}],
                "readinessProbe": {"grpc": {"port": port}},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                 {"name": "artifacts", "mountPath": "/var/lib/tandem"},
                                 {"name": "auth", "mountPath": "/etc/tandem/auth"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}},
                        {"name": "artifacts", "persistentVolumeClaim": {"claimName": "tdm-tandem-artifacts"}},
                        {"name": "auth", "secret": {"secretName": "tdm-tandem-auth"}}],
        }}},
    }


def _plan(tmp_path: Path, secrets: dict[str, dict[str, str]]) -> PodPlan:
    sparse = _deployment("sparse", ["serve", "sparse", "--port=50052", "--index=/var/lib/tandem/indexes/sparse",
                                    "--host=0.0.0.0", "--metrics-port=9464",
                                    "--auth-token-file=/etc/tandem/auth/tokens"],
                         [{"name": "TANDEM_AUTH_TOKENS",
                           "valueFrom": {"secretKeyRef": {"name": "tdm-tandem-auth", "key": "internal-token"}}}],
                         50052)
    gateway = _deployment("gateway", ["serve", "gateway", "--port=50051", "--sparse=tdm-tandem-sparse.search.svc:50052"],
                          [{"name": "PW", "value": "s3cret"}, {"name": "TANDEM_REDIS_URL", "value": "redis://:$(PW)@r:6379/0"}],
                          50051)
    config = {"kind": "ConfigMap", "metadata": {"name": "tdm-tandem"}, "data": {"TANDEM_HOME": "/var/lib/tandem"}}
    return PodPlan(tmp_path, secrets, [sparse, gateway, config])


def test_ports_paths_services_and_env_are_translated(tmp_path: Path) -> None:
    plan = _plan(tmp_path, {"tdm-tandem-auth": {"tokens": "client\n", "internal-token": "internal"}})
    sparse = local_pod(plan, "sparse")
    pvc = tmp_path / "pvc" / "tdm-tandem-artifacts"
    assert sparse.argv[:3] == ["tandem", "serve", "sparse"]
    assert f"--port={sparse.ports['grpc']}" in sparse.argv and sparse.probe_port == sparse.ports["grpc"]
    assert f"--index={pvc}/indexes/sparse" in sparse.argv
    assert "--host=127.0.0.1" in sparse.argv
    assert (tmp_path / "secrets" / "tdm-tandem-auth" / "tokens").read_text() == "client\n"
    assert sparse.env == {"TANDEM_HOME": str(pvc), "TANDEM_AUTH_TOKENS": "internal"}
    gateway = local_pod(plan, "gateway")
    assert f"--sparse=127.0.0.1:{sparse.ports['grpc']}" in gateway.argv  # the Service → the pod it selects
    assert gateway.env["TANDEM_REDIS_URL"] == "redis://:s3cret@r:6379/0"  # Kubernetes' $(VAR) expansion


def test_a_missing_secret_key_fails_like_the_kubelet(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="internal-token"):
        local_pod(_plan(tmp_path, {"tdm-tandem-auth": {"tokens": "x"}}), "sparse")


def test_gateway_follows_retriever_versions_as_often_as_sparse_follows_the_writer() -> None:
    """A gateway caches results under the retrievers' versions; when it re-reads them less
    often than the sparse service follows the index, a cached miss hides a fresh item."""
    from tandem_services.app import SPARSE_FOLLOW_S
    from tandem_services.client import RemoteRetriever

    remote = RemoteRetriever("127.0.0.1:1", "bm25")
    try:
        assert remote.version_ttl_s <= SPARSE_FOLLOW_S
    finally:
        remote.close()
