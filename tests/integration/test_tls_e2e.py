"""TLS and mutual TLS end to end: certificates generated here, a real gateway over a real
RetrieverService (both TLS), searched by a client that trusts the CA — and refused to clients
that do not trust it, present no certificate, or speak plaintext.

The certificates come from the ``cryptography`` package: a throwaway CA, a server
certificate for ``localhost``/``127.0.0.1`` and a client certificate (clientAuth), valid for
one day.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import grpc
import pytest

from tandem.search.catalog import InMemoryCatalog
from tandem.search.orchestrator import HybridSearcher
from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem_services.app import gateway_server, retriever_server
from tandem_services.client import ChannelOptions, RemoteRetriever, SearchClient
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions

pytestmark = pytest.mark.integration

ITEMS = tiny_catalog()


def _key():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key, cert) -> None:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives import serialization

    path.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _ca(d: Path, name: str):  # type: ignore[no-untyped-def]
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(d / name, key, cert)
    return key, cert


def _leaf(d: Path, name: str, ca_key, ca_cert, *, server: bool) -> None:  # type: ignore[no-untyped-def]
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _key()
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost" if server else name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                     else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    _write(d / name, key, builder.sign(ca_key, hashes.SHA256()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.pem/.key, server.pem/.key, client.pem/.key, and an unrelated other-ca.pem with its client."""
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _ca(d, "ca")
    _leaf(d, "server", ca_key, ca_cert, server=True)
    _leaf(d, "client", ca_key, ca_cert, server=False)
    other_key, other_cert = _ca(d, "other-ca")
    _leaf(d, "stranger", other_key, other_cert, server=False)
    return d


def _stack(pki: Path, *, mtls: bool):  # type: ignore[no-untyped-def]
    """A TLS RetrieverService ("generative") and a TLS gateway calling it over TLS."""
    tls = {"tls_cert": pki / "server.pem", "tls_key": pki / "server.key"}
    gen = BackgroundServer(lambda: retriever_server([TermOverlapRetriever(ITEMS, name="generative")],
                                                    ServerOptions(drain_s=0, **tls)))
    gen.start()
    remote = RemoteRetriever(f"localhost:{gen.port}", "generative", options=ChannelOptions(tls_ca=pki / "ca.pem"))
    searcher = HybridSearcher([TermOverlapRetriever(ITEMS, name="bm25"), remote], catalog=InMemoryCatalog(ITEMS))
    opts = ServerOptions(drain_s=0, tls_client_ca=pki / "ca.pem" if mtls else None, **tls)
    gw = BackgroundServer(lambda: gateway_server(searcher, opts))
    gw.start()
    return gen, gw, remote


@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls"])
def test_search_over_tls_end_to_end_and_untrusted_clients_fail(pki: Path, mtls: bool) -> None:
    gen, gw, remote = _stack(pki, mtls=mtls)
    target = f"localhost:{gw.port}"
    try:
        good = ChannelOptions(tls_ca=pki / "ca.pem", client_cert=pki / "client.pem" if mtls else None,
                              client_key=pki / "client.key" if mtls else None)
        with SearchClient(target, good, timeout_s=5) as client:
            r = client.search("cordless drill", top_k=3)
        assert r.hits[0].item_id == "t01" and not r.degraded
        assert {p.source for p in r.hits[0].provenance} == {"bm25", "generative"}  # the TLS hop to the retriever worked

        bad = [ChannelOptions(tls_ca=pki / "other-ca.pem"),  # does not trust the server's CA
               ChannelOptions()]  # plaintext against a TLS port
        if mtls:
            bad += [ChannelOptions(tls_ca=pki / "ca.pem"),  # trusts the server, presents no certificate
                    ChannelOptions(tls_ca=pki / "ca.pem", client_cert=pki / "stranger.pem",
                                   client_key=pki / "stranger.key")]  # certificate from another CA
        for options in bad:
            with SearchClient(target, options, timeout_s=3) as client, pytest.raises(grpc.RpcError) as err:
                client.search("cordless drill")
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, options
    finally:
        gw.stop()
        remote.close()
        gen.stop()
