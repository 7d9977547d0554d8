"""Rendering the Helm chart (charts/tandem) for the chart tests, and reading what it rendered.

Shared by ``tests/unit/test_chart*.py``: the project's Helm binary (``scripts/helm.sh``; a
missing binary fails the test, so CI cannot go green without the chart being checked),
offline ``helm template`` for Kubernetes 1.30 with values files and ``--set`` pairs, the
named value cases rendered once per session, and small readers of the objects: by kind, by
component, pod templates, LabelSelector matching, NetworkPolicy reachability and the
kubernetes-validate strict schema check. A plain module, not a conftest, so each test file
says which helpers it uses.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterable, Sequence
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tandem"
KUBE_VERSION = "1.30.0"
NAMESPACE = "search"
RELEASE = "tdm"

#: Values files rendered by the tests: chart defaults, a production-shaped file, the dev mode.
CASES: dict[str, list[str]] = {
    "defaults": [],
    "production": ["ci/production-values.yaml"],
    "dev": ["ci/dev-values.yaml"],
}
#: Custom resources kubernetes-validate has no schema for; checked structurally instead.
CRD_KINDS = {"ServiceMonitor"}
#: Pods that run Tandem code; the dev Redis pod is a third-party image without gRPC.
TANDEM_COMPONENTS = {"gateway", "sparse", "generative", "intent", "ingest", "schedule"}
#: Components that stay up and therefore must be probed (the schedule Job runs to completion).
LONG_RUNNING = TANDEM_COMPONENTS - {"schedule"}


@lru_cache(maxsize=1)
def helm_binary() -> str:
    """Path of the project's Helm, or a test failure that says how to install it."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "helm.sh"), "path"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"Helm is not installed: run `make setup` (or `bash scripts/helm.sh install`).\n{proc.stderr}",
                    pytrace=False)
    return proc.stdout.strip()


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the project's Helm in the chart folder (so ``ci/...`` values paths resolve)."""
    return subprocess.run([helm_binary(), *args], cwd=CHART, capture_output=True, text=True,
                          check=False, timeout=60)


def render_raw(values_files: Sequence[str] = (), sets: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """``helm template`` for Kubernetes 1.30 with the given values files and ``--set`` pairs."""
    args = ["template", RELEASE, ".", "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for f in values_files:
        args += ["-f", f]
    for s in sets:
        args += ["--set", s]
    return helm(*args)


def render(values_files: Sequence[str] = (), sets: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Rendered objects (empty YAML documents dropped); fails the test on a Helm error."""
    proc = render_raw(values_files, sets)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@cache
def _rendered_case(case: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(CASES[case]))


def rendered(case: str) -> list[dict[str, Any]]:
    """Rendered objects of a named case (cached; deep-copied so tests cannot leak edits)."""
    return copy.deepcopy(list(_rendered_case(case)))


def of_kind(objs: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The objects of one ``kind``, in render order."""
    return [o for o in objs if o["kind"] == kind]


def component(obj: dict[str, Any]) -> str | None:
    """The object's ``app.kubernetes.io/component`` label, if any."""
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def pod_templates(objs: Iterable[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod template) for every Deployment and Job."""
    return [(o, o["spec"]["template"]) for o in objs if o["kind"] in ("Deployment", "Job")]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels + matchExpressions In/NotIn/Exists) selects ``labels``."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def kv_validate(obj: dict[str, Any]) -> None:
    """kubernetes-validate's strict check of one object against the Kubernetes 1.30 schemas."""
    kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def pod_labels(objs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Pod-template labels of every Deployment and Job, by component."""
    return {component(w): t["metadata"]["labels"] for w, t in pod_templates(objs)}


def allowed_egress(objs: list[dict[str, Any]], src: str, dst: str, port: int) -> bool:
    """Whether some NetworkPolicy lets pods of ``src`` open ``dst``:``port`` (pod-selector peers only)."""
    pods = pod_labels(objs)
    for np in of_kind(objs, "NetworkPolicy"):
        if not selects(np["spec"]["podSelector"], pods[src]):
            continue
        for rule in np["spec"].get("egress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            peers = [p["podSelector"] for p in rule.get("to", []) if "podSelector" in p]
            if port in ports and any(selects(sel, pods[dst]) for sel in peers):
                return True
    return False


def allowed_ingress_from(objs: list[dict[str, Any]], dst: str, src: str, port_name: str) -> bool:
    """Whether some NetworkPolicy lets pods of ``src`` reach ``dst`` on its named port ``port_name``."""
    pods = pod_labels(objs)
    for np in of_kind(objs, "NetworkPolicy"):
        if not selects(np["spec"]["podSelector"], pods[dst]):
            continue
        for rule in np["spec"].get("ingress", []):
            if port_name in {p["port"] for p in rule.get("ports", [])} and any(
                    selects(peer.get("podSelector", {}), pods[src]) for peer in rule.get("from", [])):
                return True
    return False
