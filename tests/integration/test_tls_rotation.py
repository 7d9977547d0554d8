"""Certificate rotation without a restart (issue 19 item 6): a TLS server whose certificate
and key files are replaced serves the new certificate to the next connection, and a client
whose CA file was replaced trusts the new CA on its next channel; a half-rotated pair (new
key, old certificate) is refused while the last good certificate keeps serving."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import time
from pathlib import Path

import grpc
import pytest
from test_tls_e2e import _ca, _leaf  # the throwaway-PKI helpers of the TLS end-to-end test

from tandem_testing.term_overlap import TermOverlapRetriever
from tandem_testing.tiny_catalog import tiny_catalog
from tandem_services.app import retriever_server
from tandem_services.client import ChannelOptions, RemoteRetriever
from tandem_services.runner import BackgroundServer
from tandem_services.server import ServerOptions

pytestmark = pytest.mark.integration


def _served_certificate(port: int) -> bytes:
    """DER of the certificate the server presents to a fresh connection (no verification)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        return tls.getpeercert(binary_form=True)


def _der(pem: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.read_text())


def _install(src: Path, dst: Path) -> None:
    """Replace ``dst`` by a copy of ``src`` in one rename (how a Secret volume swaps files)."""
    tmp = dst.with_name(dst.name + ".new")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _searches(port: int, ca: Path) -> bool:
    """Whether a new channel trusting ``ca`` completes a call."""
    remote = RemoteRetriever(f"localhost:{port}", "bm25", options=ChannelOptions(tls_ca=ca), timeout_s=3)
    try:
        return bool(remote.retrieve(["drill"], 3))
    except Exception:  # noqa: BLE001 - any failure (handshake refused) means "no"
        return False
    finally:
        remote.close()


def _wait_for(pred, timeout_s: float = 8.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def test_rotated_certificate_reaches_new_connections_without_restart(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    for n in (1, 2):
        key, cert = _ca(pki, f"ca{n}")
        _leaf(pki, f"server{n}", key, cert, server=True)
    live = tmp_path / "live"
    live.mkdir()
    for name, src in (("tls.crt", "server1.pem"), ("tls.key", "server1.key"), ("ca.crt", "ca1.pem")):
        shutil.copyfile(pki / src, live / name)
    opts = ServerOptions(drain_s=0, tls_cert=live / "tls.crt", tls_key=live / "tls.key", tls_check_s=0.2)
    client_ca = ChannelOptions(tls_ca=live / "ca.crt")  # one client configuration, re-read per channel
    with BackgroundServer(lambda: retriever_server([TermOverlapRetriever(tiny_catalog(), name="bm25")], opts)) as srv:
        assert _served_certificate(srv.port) == _der(pki / "server1.pem")
        assert _searches(srv.port, live / "ca.crt")

        # Half-rotated: the new key beside the old certificate is refused; the old pair serves on.
        _install(pki / "server2.key", live / "tls.key")
        time.sleep(0.5)
        assert _served_certificate(srv.port) == _der(pki / "server1.pem")
        assert _searches(srv.port, pki / "ca1.pem")

        # The certificate follows; then the clients' CA file.
        _install(pki / "server2.pem", live / "tls.crt")
        assert _wait_for(lambda: _served_certificate(srv.port) == _der(pki / "server2.pem")), \
            "the server still presents the old certificate"
        assert not _searches(srv.port, pki / "ca1.pem"), "a client trusting only the old CA still connects"
        _install(pki / "ca2.pem", live / "ca.crt")
        channel = client_ca.channel(f"localhost:{srv.port}")
        try:
            grpc.channel_ready_future(channel).result(timeout=5)  # the new CA read for the new channel
        finally:
            channel.close()
        assert _searches(srv.port, live / "ca.crt")
