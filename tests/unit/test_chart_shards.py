"""generative.shards (issue 23 item 2): one generative Deployment + Service per shard of the model's
top-level ID codes (``--shard=i/N``), the gateway given every shard's address in order; 1 (the
default) renders exactly what the chart rendered before."""

from __future__ import annotations

import base64

import pytest
from chart_render import (NAMESPACE, RELEASE, component, kv_validate, of_kind, render, render_raw,
                          rendered, selects)
from chart_render import allowed_egress as _allowed_egress
from cryptography import x509


def _generative(objs: list[dict]) -> list[dict]:
    return [d for d in of_kind(objs, "Deployment") if component(d) == "generative"]


def _gateway_args(objs: list[dict]) -> list[str]:
    (gw,) = [d for d in of_kind(objs, "Deployment") if component(d) == "gateway"]
    return gw["spec"]["template"]["spec"]["containers"][0]["args"]


def test_one_shard_is_the_unsharded_service() -> None:
    objs = rendered("defaults")
    (dep,) = _generative(objs)
    assert dep["metadata"]["name"] == f"{RELEASE}-tandem-generative"
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--shard") for a in args)
    assert "tandem.io/shard" not in dep["spec"]["selector"]["matchLabels"]
    assert f"--generative={RELEASE}-tandem-generative.{NAMESPACE}.svc:50053" in _gateway_args(objs)


def test_shards_get_a_deployment_and_service_each_and_the_gateway_all_of_them() -> None:
    objs = render(sets=["generative.shards=3"])
    deps = _generative(objs)
    names = [f"{RELEASE}-tandem-generative-{i}" for i in range(3)]
    assert [d["metadata"]["name"] for d in deps] == names
    services = [s for s in of_kind(objs, "Service") if component(s) == "generative"]
    assert [s["metadata"]["name"] for s in services] == names
    for i, (dep, svc) in enumerate(zip(deps, services, strict=True)):
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        assert f"--shard={i}/3" in args and any(a.startswith("--model=") for a in args)
        pod = dep["spec"]["template"]["metadata"]["labels"]
        assert selects(dep["spec"]["selector"], pod)
        chosen = [d["metadata"]["name"] for d in deps
                  if selects({"matchLabels": svc["spec"]["selector"]}, d["spec"]["template"]["metadata"]["labels"])]
        assert chosen == [names[i]]  # each Service reaches its own shard only
        kv_validate(dep)
        kv_validate(svc)
    addresses = ",".join(f"{n}.{NAMESPACE}.svc:50053" for n in names)
    assert f"--generative={addresses}" in _gateway_args(objs)
    assert _allowed_egress(objs, "gateway", "generative", 50053)
    (secret,) = [s for s in of_kind(objs, "Secret") if s["metadata"]["name"] == f"{RELEASE}-tandem-tls"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    dns = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert all(f"{n}.{NAMESPACE}.svc" in dns for n in names)


@pytest.mark.parametrize(("sets", "message"), [
    (["generative.shards=2", "generative.autoscaling.enabled=true"], "autoscaling"),
    (["generative.shards=2", "generative.registry.enabled=true"], "registry"),
    (["generative.shards=0"], "shards"),
])
def test_unsupported_shard_settings_are_refused(sets: list[str], message: str) -> None:
    proc = render_raw(sets=sets)
    assert proc.returncode != 0 and message in proc.stderr
