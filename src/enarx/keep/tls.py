"""The Keep's TLS identity and the ``ssl`` contexts for listen/connect entries.

One run, one identity: a :class:`KeepIdentity` holding a key generated inside the Keep,
never written to disk and never leaving the process, and the chain presented for it. There is
no process-global identity: the agent creates one per run and passes it explicitly to
:func:`server_context` / :func:`client_context`. With a steward, the identity is the
attested one-time P-256 key and the chain the steward issued for it, leaf then steward CA
(``keep/attest.py``, ``self_signed=False``). Without one, the Keep certifies a P-384 key
itself (:func:`self_signed`, only when a TLS entry needs it); clients pin that certificate by
the fingerprints printed at start-up.

Listeners speak TLS 1.3 only. Outgoing connections accept TLS 1.2 or 1.3 (many servers
still lack 1.3), check the server's name, and trust the system roots or a PEM file.

``ssl`` loads keys only from files, so the key goes through an anonymous in-memory file
(``memfd_create``, read through ``/proc/self/fd``), or, where that is missing, a 0600 file in
a 0700 directory that is deleted as soon as OpenSSL has read it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from enarx.errors import ResourceError

__all__ = ["KeepIdentity", "client_context", "self_signed", "server_context"]

_VALIDITY = datetime.timedelta(days=1)  # a one-time key needs no long-lived certificate


@dataclass(frozen=True)
class KeepIdentity:
    """The Keep's private key and the certificate chain presented for it (leaf first)."""

    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]
    self_signed: bool

    @property
    def cert(self) -> x509.Certificate:
        return self.chain[0]

    def fingerprint(self) -> str:
        """SHA-256 of the leaf certificate (DER), as ``openssl x509 -fingerprint -sha256``."""
        digest = self.cert.fingerprint(hashes.SHA256())
        return ":".join(f"{b:02X}" for b in digest)

    def spki_pin(self) -> str:
        """``sha256//BASE64`` of the public key, the form ``curl --pinnedpubkey`` takes."""
        spki = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "sha256//" + base64.b64encode(hashlib.sha256(spki).digest()).decode()


def self_signed(common_name: str = "enarx keep") -> KeepIdentity:
    """A fresh one-time key and a short-lived certificate for it, signed by itself."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA384())
    )
    return KeepIdentity(key=key, chain=(cert,), self_signed=True)


# --- loading into ssl without key material on disk -----------------------------------------


@contextlib.contextmanager
def _secret_path(data: bytes) -> Iterator[str]:
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd("enarx-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="enarx-tls-") as d:  # mode 0700
        path = os.path.join(d, "key.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        try:
            yield path
        finally:
            os.unlink(path)


def _load_identity(ctx: ssl.SSLContext, ident: KeepIdentity) -> None:
    pem = ident.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in ident.chain)
    with _secret_path(pem) as path:
        ctx.load_cert_chain(path)


# --- contexts ------------------------------------------------------------------------------


def server_context(
    where: str, identity: KeepIdentity, client_ca: str | None = None
) -> ssl.SSLContext:
    """TLS 1.3 server context presenting ``identity``; mTLS when ``client_ca`` is set."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    _load_identity(ctx, identity)
    if client_ca is not None:
        _load_trust(ctx, client_ca, where, "client_ca")
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(
    where: str, identity: KeepIdentity, trust: str = "system"
) -> ssl.SSLContext:
    """Client context: server name checked against ``trust``; ``identity`` presented."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if trust == "system":
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        _load_trust(ctx, trust, where, "trust")
    _load_identity(ctx, identity)
    return ctx


def _load_trust(ctx: ssl.SSLContext, path: str, where: str, key: str) -> None:
    try:
        ctx.load_verify_locations(cafile=os.path.expanduser(path))
    except FileNotFoundError:
        raise ResourceError(
            f"{where}: {key} file {path!r} does not exist",
            hint="give a PEM file of CA certificates (a relative path starts at Enarx.toml's directory)",
        ) from None
    except (ssl.SSLError, OSError, ValueError) as e:
        raise ResourceError(
            f"{where}: {key} file {path!r} holds no usable PEM certificates ({e})",
            hint="give a PEM file of CA certificates",
        ) from None
