"""The Helm chart (charts/tandem): lint, render, validate against Kubernetes 1.30, and check
the properties every rendered object must have (schema, standard labels, ServiceMonitor).

Helm is the project's own binary (``scripts/helm.sh``, installed by ``make setup``); a missing
binary fails these tests rather than skipping them, so CI cannot go green without the chart
being checked. Rendering is offline (``helm template``), so no cluster is needed. Helpers are in
``chart_render.py``; the workloads (probes, security, GPUs), network policies and services, and
the gateway's command line are checked in ``test_chart_workloads.py``,
``test_chart_network.py`` and ``test_chart_gateway.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import kubernetes_validate
import pytest
from chart_render import (
    CASES,
    CRD_KINDS,
    NAMESPACE,
    component,
    helm,
    kv_validate,
    of_kind,
    rendered,
    selects,
)


@pytest.fixture(scope="module", autouse=True)
def _cache_kubernetes_schemas() -> Iterable[None]:
    """kubernetes-validate re-reads and re-parses its multi-megabyte definitions file for every
    object; caching the parsed (never mutated) schemas makes validation ~6x faster."""
    import kubernetes_validate.utils as kv_utils

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kv_utils, "schema_contents", lru_cache(maxsize=None)(kv_utils.schema_contents))
        yield


# --- lint and Kubernetes schema validation -----------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_helm_lint_strict(case: str) -> None:
    args = ["lint", "--strict", "."]
    for f in CASES[case]:
        args += ["-f", f]
    proc = helm(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_objects_validate_strictly_against_kubernetes_1_30(case: str) -> None:
    objs = rendered(case)
    assert objs, "nothing rendered"
    errors = []
    for obj in objs:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kv_validate(obj)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(e.message)
    assert not errors, "\n".join(errors)


def test_strict_validation_catches_a_misplaced_field() -> None:
    """Guards the check above against passing vacuously (e.g. a lenient schema set)."""
    deployment = of_kind(rendered("defaults"), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpcc"] = {"port": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kv_validate(deployment)


def test_service_monitor_only_when_enabled_and_points_at_metrics_ports() -> None:
    assert not of_kind(rendered("defaults"), "ServiceMonitor"), "ServiceMonitor must be off by default"
    objs = rendered("production")
    (sm,) = of_kind(objs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"]
    scraped = [s for s in of_kind(objs, "Service") if selects(sm["spec"]["selector"], s["metadata"]["labels"])]
    assert {component(s) for s in scraped} == {"gateway", "sparse", "generative", "intent", "ingest"}
    for svc in scraped:
        assert "metrics" in {p["name"] for p in svc["spec"]["ports"]}, svc["metadata"]["name"]


def test_every_object_carries_the_standard_labels() -> None:
    for obj in rendered("production"):
        labels = obj["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"
        assert obj["metadata"]["namespace"] == NAMESPACE
