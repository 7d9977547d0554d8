"""The chart's network wiring (charts/tandem): NetworkPolicy selectors match the release's pods,
named ports exist, the gateway may reach the retrievers and nothing else may, and every
Service selects exactly one workload by named ports. Rendering helpers: ``chart_render.py``.
"""

from __future__ import annotations

import pytest
from chart_render import (
    CASES,
    allowed_egress,
    allowed_ingress_from,
    component,
    of_kind,
    pod_labels,
    pod_templates,
    rendered,
    selects,
)


# --- NetworkPolicy -----------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_network_policy_selectors_match_the_pods(case: str) -> None:
    objs = rendered(case)
    pods = pod_labels(objs)
    policies = of_kind(objs, "NetworkPolicy")
    assert policies, "NetworkPolicies are on by default"
    for np in policies:
        name = np["metadata"]["name"]
        selected = {c for c, labels in pods.items() if selects(np["spec"]["podSelector"], labels)}
        assert selected, f"{name}: podSelector matches no pod of the release"
        for rule in np["spec"].get("ingress", []) + np["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    assert any(selects(peer["podSelector"], lb) for lb in pods.values()), \
                        f"{name}: peer {peer['podSelector']} matches no pod"
        # Named ports must exist on every selected pod, or the rule silently opens nothing.
        for rule in np["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if isinstance(port["port"], str):
                    for comp in selected:
                        (w,) = [w for w, _ in pod_templates(objs) if component(w) == comp]
                        names = {p.get("name") for c in w["spec"]["template"]["spec"]["containers"]
                                 for p in c.get("ports", [])}
                        assert port["port"] in names, f"{name}: port {port['port']!r} not on {comp}"

    # Every pod is under the default deny, and may resolve DNS.
    deny = next(p for p in policies if p["metadata"]["name"].endswith("-default-deny"))
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    assert {c for c, lb in pods.items() if selects(deny["spec"]["podSelector"], lb)} == set(pods)


@pytest.mark.parametrize("case", sorted(CASES))
def test_network_policy_opens_gateway_to_retrievers_and_nothing_between_retrievers(case: str) -> None:
    objs = rendered(case)
    pods = pod_labels(objs)
    services = {component(s): s for s in of_kind(objs, "Service")}
    for target in ("sparse", "generative", "intent"):
        if target not in pods:
            continue
        port = next(p["port"] for p in services[target]["spec"]["ports"] if p["name"] == "grpc")
        assert allowed_egress(objs, "gateway", target, port), f"gateway -> {target}:{port} blocked"
        assert allowed_ingress_from(objs, target, "gateway", "grpc"), f"{target} refuses the gateway"
        others = [c for c in pods if c not in ("gateway", target)]
        for other in others:
            assert not allowed_ingress_from(objs, target, other, "grpc"), f"{other} may call {target}"
    if "redis" in pods:
        assert allowed_egress(objs, "gateway", "redis", 6379)
        assert not allowed_egress(objs, "sparse", "redis", 6379)


# --- Services ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_services_select_their_pods_by_named_ports(case: str) -> None:
    objs = rendered(case)
    workloads = [(w, t) for w, t in pod_templates(objs) if w["kind"] == "Deployment"]
    for svc in of_kind(objs, "Service"):
        matched = [(w, t) for w, t in workloads if selects({"matchLabels": svc["spec"]["selector"]},
                                                            t["metadata"]["labels"])]
        assert len(matched) == 1, f"{svc['metadata']['name']} selects {len(matched)} workloads"
        (w, t), = matched
        names = {p["name"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, f"{svc['metadata']['name']}: {port['targetPort']} not on the pod"
    for w, t in workloads:
        assert selects(w["spec"]["selector"], t["metadata"]["labels"])
