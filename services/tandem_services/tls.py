"""Server TLS credentials that follow their files: a rotated certificate without a restart.

cert-manager renews a certificate weeks before it expires and Kubernetes swaps the mounted
Secret in place; a server that read its PEM files once at start-up keeps presenting the old
certificate until it is restarted, and fails every handshake once that expires.
:class:`ReloadingServerCertificate` hands gRPC *dynamic* credentials
(``grpc.dynamic_ssl_server_credentials``): gRPC asks its fetcher for the configuration at
each new connection's handshake, the fetcher checks the certificate, key and client-CA files
at most every ``check_s`` (:class:`~tandem_services.tokens.FileWatch`, the change check of
the token files) and returns a new configuration when they changed. Connections already
open keep their session; new ones get the new certificate.

A new pair is used only when it loads and the key matches the certificate: a Secret caught
half-written (new certificate, old key) would otherwise fail every handshake. Such a pair is
logged and the files are read again at the next check, while the last good pair serves.
Clients re-read their CA file for every channel they open (:meth:`ChannelOptions.channel
<tandem_services.client.ChannelOptions.channel>`).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import grpc

from tandem.errors import InvalidInput
from tandem_services.tokens import FileWatch

log = logging.getLogger("tandem_services.tls")

CHECK_S = 1.0
"""Default seconds between checks of the certificate files (the token files' default too)."""


def _check_pair(cert: bytes, key: bytes, where: str) -> None:
    """:class:`InvalidInput` unless ``cert`` is a PEM certificate whose public key is ``key``'s."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        leaf = x509.load_pem_x509_certificate(cert)
    except ValueError as exc:
        raise InvalidInput(f"`tls_cert` {where}: not a PEM certificate ({exc})") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"`tls_key` of {where}: not an unencrypted PEM private key ({exc})") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if (leaf.public_key().public_bytes(serialization.Encoding.DER, spki)
            != private.public_key().public_bytes(serialization.Encoding.DER, spki)):
        raise InvalidInput(f"`tls_key` does not belong to the certificate {where}")


class ReloadingServerCertificate:
    """The TLS (or, with ``client_ca``, mutual TLS) identity of a server, re-read when its
    files change; see the module docstring. :meth:`credentials` is what gRPC binds with."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None, *, check_s: float = CHECK_S) -> None:
        self.cert, self.key, self.client_ca = Path(cert), Path(key), client_ca and Path(client_ca)
        files = [self.cert, self.key] + ([self.client_ca] if self.client_ca else [])
        for f in files:
            if not f.is_file():
                raise InvalidInput(f"TLS file {str(f)!r} does not exist")
        self._watch = FileWatch(files, check_s)
        self._mu = threading.Lock()
        self.reloads = 0
        """How many times a changed set of files was taken into use (not counting the first)."""
        stamp = self._watch.poll(force=True)
        assert stamp is not None  # nothing accepted yet: the first poll always reports a stamp
        self._initial = self._read()
        self._watch.accept(stamp)

    def _read(self) -> grpc.ServerCertificateConfiguration:
        """The configuration of the files as they are now; :class:`InvalidInput` when they do not
        form a usable identity, ``OSError`` when one cannot be read."""
        cert, key = self.cert.read_bytes(), self.key.read_bytes()
        _check_pair(cert, key, str(self.cert))
        ca = self.client_ca.read_bytes() if self.client_ca else None
        if ca is not None and b"-----BEGIN CERTIFICATE-----" not in ca:
            raise InvalidInput(f"`tls_client_ca` {str(self.client_ca)!r} holds no PEM certificate")
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's fetcher: a new configuration when the files changed into a usable one, else
        ``None`` (keep the current). Never raises: it runs inside every TLS handshake."""
        with self._mu:
            try:
                stamp = self._watch.poll()
                if stamp is None:
                    return None
                config = self._read()
            except (OSError, InvalidInput) as exc:
                log.warning("TLS files changed but cannot be used yet; keeping the last good certificate",
                            extra={"cert": str(self.cert), "error": str(exc)})
                return None
            except Exception:  # noqa: BLE001 - a handshake must never die of a reload
                log.exception("TLS reload failed; keeping the last good certificate")
                return None
            self._watch.accept(stamp)
            self.reloads += 1
        log.info("TLS certificate files changed; new connections get the new certificate",
                 extra={"cert": str(self.cert), "reloads": self.reloads})
        return config

    def credentials(self) -> grpc.ServerCredentials:
        """Dynamic gRPC server credentials starting with the files read at construction."""
        # grpc documents a fetcher returning None (keep the current certificate); its stub does not
        return grpc.dynamic_ssl_server_credentials(self._initial, self.fetch,  # type: ignore[arg-type]
                                                   require_client_authentication=self.client_ca is not None)
