"""The Helm chart (charts/tandem): lint, render, validate against Kubernetes 1.30, and check
the properties the platform relies on in the rendered objects.

Helm is the project's own binary (``scripts/helm.sh``, installed by ``make setup``); a missing
binary fails these tests rather than skipping them, so CI cannot go green without the chart
being checked. Rendering is offline (``helm template``), so no cluster is needed.
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
    return [o for o in objs if o["kind"] == kind]


def component(obj: dict[str, Any]) -> str | None:
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


# --- NetworkPolicy -----------------------------------------------------------------------


def pod_labels(objs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {component(w): t["metadata"]["labels"] for w, t in pod_templates(objs)}


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


def _allowed_egress(objs: list[dict[str, Any]], src: str, dst: str, port: int) -> bool:
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


def _allowed_ingress_from(objs: list[dict[str, Any]], dst: str, src: str, port_name: str) -> bool:
    pods = pod_labels(objs)
    for np in of_kind(objs, "NetworkPolicy"):
        if not selects(np["spec"]["podSelector"], pods[dst]):
            continue
        for rule in np["spec"].get("ingress", []):
            if port_name in {p["port"] for p in rule.get("ports", [])} and any(
                    selects(peer.get("podSelector", {}), pods[src]) for peer in rule.get("from", [])):
                return True
    return False


@pytest.mark.parametrize("case", sorted(CASES))
def test_network_policy_opens_gateway_to_retrievers_and_nothing_between_retrievers(case: str) -> None:
    objs = rendered(case)
    pods = pod_labels(objs)
    services = {component(s): s for s in of_kind(objs, "Service")}
    for target in ("sparse", "generative", "intent"):
        if target not in pods:
            continue
        port = next(p["port"] for p in services[target]["spec"]["ports"] if p["name"] == "grpc")
        assert _allowed_egress(objs, "gateway", target, port), f"gateway -> {target}:{port} blocked"
        assert _allowed_ingress_from(objs, target, "gateway", "grpc"), f"{target} refuses the gateway"
        others = [c for c in pods if c not in ("gateway", target)]
        for other in others:
            assert not _allowed_ingress_from(objs, target, other, "grpc"), f"{other} may call {target}"
    if "redis" in pods:
        assert _allowed_egress(objs, "gateway", "redis", 6379)
        assert not _allowed_egress(objs, "sparse", "redis", 6379)


# --- Services, names, labels ---------------------------------------------------------------


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


def test_every_object_carries_the_standard_labels() -> None:
    for obj in rendered("production"):
        labels = obj["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"
        assert obj["metadata"]["namespace"] == NAMESPACE


def test_gateway_is_wired_to_the_other_services_in_cluster() -> None:
    objs = rendered("production")
    (gw,) = [d for d in of_kind(objs, "Deployment") if component(d) == "gateway"]
    args = gw["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["serve", "gateway"]
    for comp in ("sparse", "generative", "intent"):
        (svc,) = [s for s in of_kind(objs, "Service") if component(s) == comp]
        port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc")
        address = f"{svc['metadata']['name']}.{NAMESPACE}.svc:{port}"
        assert any(a.endswith("=" + address) for a in args), f"gateway does not reach {comp} at {address}: {args}"


def test_gateway_fusion_and_learned_model_reach_the_command_line() -> None:
    def gateway(objs: list[dict[str, Any]]) -> dict[str, Any]:
        (gw,) = [d for d in of_kind(objs, "Deployment") if component(d) == "gateway"]
        return gw["spec"]["template"]["spec"]

    spec = gateway(render())
    assert "--fusion=auto" in spec["containers"][0]["args"]
    assert not any(a.startswith("--fusion-model") for a in spec["containers"][0]["args"])
    spec = gateway(render(sets=["gateway.fusionModel=fusion/learned.json"]))
    args = spec["containers"][0]["args"]
    model = next(a for a in args if a.startswith("--fusion-model="))
    mount = next(m["mountPath"] for m in spec["containers"][0]["volumeMounts"] if m["name"] == "artifacts")
    assert model == f"--fusion-model={mount}/fusion/learned.json"  # the artifact volume is mounted for it
    bad = render_raw(sets=["gateway.fusion=borda"])
    assert bad.returncode != 0 and "fusion" in bad.stderr


def test_gateway_reads_the_registry_the_generative_service_follows_for_the_promoted_fusion_model() -> None:
    def gateway(sets: list[str]) -> tuple[list[str], dict[str, Any]]:
        (gw,) = [d for d in of_kind(render(sets=sets), "Deployment") if component(d) == "gateway"]
        spec = gw["spec"]["template"]["spec"]
        return spec["containers"][0]["args"], {v["name"]: v for v in spec["volumes"]}

    args, _ = gateway([])  # modelDir: no registry to read
    assert not any(a.startswith("--registry") for a in args)
    args, volumes = gateway(["generative.registry.enabled=true"])
    assert "--fusion=auto" in args and "--registry=/var/lib/tandem/registry" in args
    assert "persistentVolumeClaim" in volumes["artifacts"]  # the registry on the artifact volume is mounted
    s3 = ["generative.registry.enabled=true", "artifacts.uri=s3://bucket/tandem", "networkPolicy.enabled=true"]
    args, volumes = gateway(s3)
    assert "--registry=s3://bucket/tandem" in args and "emptyDir" in volumes["artifacts"]
    (policy,) = [p for p in of_kind(render(sets=s3), "NetworkPolicy")
                 if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component") == "gateway"]
    egress = [p.get("port") for rule in policy["spec"]["egress"] for p in rule.get("ports", [])]
    assert 443 in egress  # networkPolicy.objectStorePort: the registry is read from the object store
    args, _ = gateway(["generative.registry.enabled=true", "gateway.fusion=rrf"])  # fusion named: no lookup
    assert not any(a.startswith("--registry") for a in args)


def test_gateway_canary_values_reach_the_command_line_and_the_policy_the_config_map(tmp_path: Path) -> None:
    from tandem.canary import CanaryPolicy

    def gateway_args(objs: list[dict[str, Any]]) -> list[str]:
        (gw,) = [d for d in of_kind(objs, "Deployment") if component(d) == "gateway"]
        return gw["spec"]["template"]["spec"]["containers"][0]["args"]

    objs = render()
    args = gateway_args(objs)
    assert "--canary-share=0" in args and not any(a.startswith("--candidate-") for a in args)
    (cm,) = of_kind(objs, "ConfigMap")
    policy = CanaryPolicy.model_validate_json(cm["data"]["TANDEM_CANARY_POLICY"])  # what `tandem canary run` reads
    assert policy.stages == (0.01, 0.1, 0.5, 1.0) and policy.mode == "interleave" and policy.alpha == 0.01
    values = tmp_path / "canary.yaml"
    values.write_text(yaml.safe_dump({"gateway": {"canary": {
        "candidateGenerative": "tdm2-tandem-generative.search.svc:50053", "candidateFusionModel": "fusion/v2.json",
        "share": 0.1, "mode": "split", "feedbackKafka": True, "policy": {"minQuality": 400}}},
        "kafka": {"bootstrapServers": "kafka.search.svc:9092"}}))
    objs = render([str(values)])
    args = gateway_args(objs)
    for flag in ("--candidate-generative=tdm2-tandem-generative.search.svc:50053", "--canary-share=0.1",
                 "--canary-mode=split", "--feedback-kafka"):
        assert flag in args, args
    assert any(a.startswith("--candidate-fusion-model=") and a.endswith("/fusion/v2.json") for a in args)
    (cm,) = of_kind(objs, "ConfigMap")
    assert CanaryPolicy.model_validate_json(cm["data"]["TANDEM_CANARY_POLICY"]).min_quality == 400
    values.write_text(yaml.safe_dump({"gateway": {"canary": {"share": 0.5}}}))
    bad = render_raw([str(values)])
    assert bad.returncode != 0 and "gateway.canary.candidateGenerative" in bad.stderr
    values.write_text(yaml.safe_dump({"gateway": {"canary": {"share": 1.5}}}))
    bad = render_raw([str(values)])
    assert bad.returncode != 0 and "gateway.canary.share" in bad.stderr


def test_gateway_personal_and_failed_query_values_reach_the_command_line(tmp_path: Path) -> None:
    def gateway(objs: list[dict[str, Any]]) -> dict[str, Any]:
        (gw,) = [d for d in of_kind(objs, "Deployment") if component(d) == "gateway"]
        return gw["spec"]["template"]["spec"]["containers"][0]

    args = gateway(render())["args"]
    assert not any(a.startswith(("--profiles-", "--failed-")) for a in args)  # off by default
    values = tmp_path / "personal.yaml"
    values.write_text(yaml.safe_dump({
        "gateway": {"personal": {"profilesModel": "models/v2", "weights": "personal/w.json"},
                    "failedQueries": {"kafka": True, "minScore": 0.01}},
        "redis": {"mode": "inCluster"}, "kafka": {"bootstrapServers": "kafka.search.svc:9092"}}))
    gw = gateway(render([str(values)]))
    args, env = gw["args"], {e["name"]: e.get("value") for e in gw.get("env", [])}
    mount = next(m["mountPath"] for m in gw["volumeMounts"] if m["name"] == "artifacts")
    for flag in (f"--profiles-model={mount}/models/v2", f"--profiles-weights={mount}/personal/w.json",
                 "--profiles-redis-url=$(TANDEM_REDIS_URL)", "--profiles-consume", "--failed-queries-kafka",
                 "--failed-min-score=0.01"):
        assert flag in args, args
    assert env["TANDEM_KAFKA_BOOTSTRAP"] == "kafka.search.svc:9092" and env["TANDEM_REDIS_URL"]
    values.write_text(yaml.safe_dump({"gateway": {"personal": {"profilesModel": "models/v2"}}}))
    bad = render_raw([str(values)])  # redis store without a Redis
    assert bad.returncode != 0 and "gateway.personal.store" in bad.stderr
    values.write_text(yaml.safe_dump({"gateway": {"personal": {"profilesModel": "m", "store": "memory",
                                                               "consume": False}}}))
    args = gateway(render([str(values)]))["args"]
    assert "--profiles-model=" + mount + "/m" in args and not any(a.startswith("--profiles-redis") for a in args)
    values.write_text(yaml.safe_dump({"gateway": {"personal": {"store": "disk"}}}))
    assert render_raw([str(values)]).returncode != 0
