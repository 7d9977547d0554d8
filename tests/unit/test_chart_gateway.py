"""The gateway's command line as the chart (charts/tandem) renders it: wired to the other
services in cluster; fusion, learned model and registry lookup; canary values and policy
ConfigMap; personalisation and failed-query options, with the refusals of inconsistent values.
Rendering helpers: ``chart_render.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from chart_render import (
    NAMESPACE,
    component,
    of_kind,
    render,
    render_raw,
    rendered,
)


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
