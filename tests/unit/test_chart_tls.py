"""TLS is on by default in the chart (issue 19 item 6): a CA and a certificate generated at
install when no Secret is given (kept across upgrades by ``lookup``), or cert-manager's; every
server mounts it and the gateway trusts its CA for the retrievers."""

from __future__ import annotations

import base64
import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from chart_render import NAMESPACE, RELEASE, component, of_kind, render, rendered

SECRET = f"{RELEASE}-tandem-tls"
SERVERS = ("gateway", "sparse", "generative")


def _pem(secret: dict, key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def _servers(objs: list[dict]) -> dict[str, dict]:
    return {component(d): d["spec"]["template"]["spec"] for d in of_kind(objs, "Deployment")
            if component(d) in SERVERS}


def test_defaults_serve_tls_with_a_generated_certificate_the_gateway_trusts() -> None:
    objs = rendered("defaults")
    (secret,) = [s for s in of_kind(objs, "Secret") if s["metadata"]["name"] == SECRET]
    assert secret["type"] == "kubernetes.io/tls"
    ca = x509.load_pem_x509_certificate(_pem(secret, "ca.crt"))
    cert = x509.load_pem_x509_certificate(_pem(secret, "tls.crt"))
    assert cert.issuer == ca.subject
    key = ca.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
    else:
        assert isinstance(key, ec.EllipticCurvePublicKey)
    names = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                .get_values_for_type(x509.DNSName))
    for c in SERVERS:
        assert f"{RELEASE}-tandem-{c}.{NAMESPACE}.svc" in names, c
    assert "localhost" in names
    assert cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365)
    for comp, spec in _servers(objs).items():
        (c,) = spec["containers"]
        assert "--tls-cert=/etc/tandem/tls/tls.crt" in c["args"] and "--tls-key=/etc/tandem/tls/tls.key" in c["args"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == SECRET, comp
    assert "--downstream-ca=/etc/tandem/tls/ca.crt" in _servers(objs)["gateway"]["containers"][0]["args"]


def test_extra_names_go_into_the_certificate() -> None:
    objs = render(sets=["tls.dnsNames={search.example.com}"])
    (secret,) = of_kind(objs, "Secret")
    cert = x509.load_pem_x509_certificate(_pem(secret, "tls.crt"))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "search.example.com" in names.get_values_for_type(x509.DNSName)


def test_cert_manager_issues_the_secret_instead() -> None:
    objs = render(sets=["tls.certManager.enabled=true"])
    assert not of_kind(objs, "Secret"), "cert-manager writes the Secret; the chart must not"
    certs = {c["metadata"]["name"]: c["spec"] for c in of_kind(objs, "Certificate")}
    leaf = certs[SECRET]
    assert leaf["secretName"] == SECRET
    assert f"{RELEASE}-tandem-sparse.{NAMESPACE}.svc" in leaf["dnsNames"]
    assert certs[f"{RELEASE}-tandem-ca"]["isCA"] is True, "no issuerRef: the chart bootstraps its own CA"
    assert leaf["issuerRef"]["name"] == f"{RELEASE}-tandem-ca"
    assert {i["metadata"]["name"] for i in of_kind(objs, "Issuer")} == {f"{RELEASE}-tandem-ca",
                                                                         f"{RELEASE}-tandem-selfsigned"}
    given = render(sets=["tls.certManager.enabled=true", "tls.certManager.issuerRef.name=corp",
                         "tls.certManager.issuerRef.kind=ClusterIssuer"])
    (leaf,) = [c["spec"] for c in of_kind(given, "Certificate")]
    assert leaf["issuerRef"] == {"name": "corp", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert not of_kind(given, "Issuer")
    for spec in _servers(given).values():
        assert {v["name"]: v for v in spec["volumes"]}["tls"]["secret"]["secretName"] == SECRET


def test_an_existing_secret_is_used_as_given() -> None:
    objs = rendered("production")
    assert not of_kind(objs, "Secret") and not of_kind(objs, "Certificate")
    for spec in _servers(objs).values():
        assert {v["name"]: v for v in spec["volumes"]}["tls"]["secret"]["secretName"] == "tandem-grpc-tls"
