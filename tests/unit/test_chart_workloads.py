"""The chart's workloads (charts/tandem): every container gRPC-probed, restricted and with
resource requests; probes on the plaintext health port when TLS is on; GPUs requested only
by the generative service and only when enabled. Rendering helpers: ``chart_render.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from chart_render import (
    CASES,
    LONG_RUNNING,
    component,
    of_kind,
    pod_templates,
    render,
    rendered,
)

# --- every container: gRPC probes, restricted security, resource requests -----------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_container_is_probed_restricted_and_has_requests(case: str) -> None:
    objs = rendered(case)
    seen = set()
    for workload, tmpl in pod_templates(objs):
        name, comp = workload["metadata"]["name"], component(workload)
        seen.add(comp)
        pod = tmpl["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0, name
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod["automountServiceAccountToken"] is False, name
        assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True, name
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{name}/{c['name']}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            requests = c["resources"]["requests"]
            assert requests.get("cpu") and requests.get("memory"), f"{where}: cpu/memory requests missing"
            if comp not in LONG_RUNNING:
                continue
            ports = {p["containerPort"] for p in c["ports"]}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, f"{where}: no {probe}"
                grpc = c[probe].get("grpc")
                assert grpc is not None, f"{where}: {probe} is not a native gRPC probe"
                assert grpc["port"] in ports, f"{where}: {probe} targets port {grpc['port']}, not a container port"
                # "" (or absent) = overall server health in grpc.health.v1.
                assert grpc.get("service", "") == "", where
    assert {"gateway", "sparse", "generative"} <= seen, f"missing workloads in {seen}"


def test_probes_use_the_plaintext_health_port_when_tls_is_on() -> None:
    """Kubelet cannot speak TLS: with TLS on, probes go to the health-only port the server opens."""
    objs = rendered("production")
    for dep in of_kind(objs, "Deployment"):
        if component(dep) not in LONG_RUNNING:
            continue
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        health = next(p["containerPort"] for p in c["ports"] if p["name"] == "health")
        assert c["livenessProbe"]["grpc"]["port"] == health, dep["metadata"]["name"]
        assert c["readinessProbe"]["grpc"]["port"] == health, dep["metadata"]["name"]
        assert f"--health-port={health}" in c["args"], dep["metadata"]["name"]
    for dep in of_kind(rendered("defaults"), "Deployment"):  # TLS is on by default (issue 19)
        if component(dep) not in LONG_RUNNING:
            continue
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        health = next(p["containerPort"] for p in c["ports"] if p["name"] == "health")
        assert c["readinessProbe"]["grpc"]["port"] == health, dep["metadata"]["name"]
        assert "--tls-cert=/etc/tandem/tls/tls.crt" in c["args"], dep["metadata"]["name"]
    for dep in of_kind(render(sets=["tls.enabled=false"]), "Deployment"):
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
        assert c["readinessProbe"]["grpc"]["port"] == grpc_port


# --- GPU scheduling --------------------------------------------------------------------------


def test_generative_requests_a_gpu_only_when_enabled() -> None:
    def generative(objs: list[dict[str, Any]]) -> dict[str, Any]:
        (dep,) = [d for d in of_kind(objs, "Deployment") if component(d) == "generative"]
        return dep["spec"]["template"]["spec"]

    pod = generative(rendered("production"))
    (c,) = pod["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["cpu"] == "4", "GPU must be added to, not replace, the CPU/memory requests"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]

    (dep,) = [d for d in of_kind(rendered("production"), "Deployment") if component(d) == "generative"]
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}, \
        "a GPU rollout must not wait for a spare GPU to surge onto"

    pod = generative(render(sets=["generative.gpu.enabled=true", "generative.gpu.count=2"]))
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2

    pod = generative(rendered("defaults"))
    for section in ("limits", "requests"):
        assert "nvidia.com/gpu" not in pod["containers"][0]["resources"].get(section, {})
    for dep in of_kind(rendered("production"), "Deployment"):
        if component(dep) != "generative":
            res = dep["spec"]["template"]["spec"]["containers"][0]["resources"]
            assert "nvidia.com/gpu" not in res.get("limits", {}), dep["metadata"]["name"]
