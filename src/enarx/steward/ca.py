"""The steward's certificate authority: one CA key, its self-signed certificate, and issuance.

Issued leaf certificates (:meth:`StewardCA.issue`) carry the Keep's one-time public key, a
random 159-bit serial, ``BasicConstraints CA=false`` (critical), ``KeyUsage
digitalSignature`` (critical), ``ExtendedKeyUsage serverAuth, clientAuth``, the SANs given,
SKI/AKI, and whatever evidence/workload extensions the caller adds
(steward/extensions.py). The steward's own TLS certificate comes from
:meth:`StewardCA.server_cert`.

No I/O: the server stores :meth:`StewardCA.key_pem` / :attr:`StewardCA.cert_pem` itself
(``enarx.fsutil.atomic_write(mode=0o600)`` or the database).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from enarx.errors import ConfigError, UsageError

__all__ = [
    "CA_VALIDITY",
    "SERVER_VALIDITY",
    "StewardCA",
    "general_name",
    "general_names",
]

CA_VALIDITY = datetime.timedelta(days=3650)
SERVER_VALIDITY = datetime.timedelta(days=90)
#: Leaf certificates start this long before "now", for clocks that are slightly behind.
_BACKDATE = datetime.timedelta(minutes=5)

_SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def general_name(name: str | x509.GeneralName) -> x509.GeneralName:
    """``"127.0.0.1"``/``"::1"`` -> IPAddress, ``"keep.example.com"``/``"*.example.com"`` ->
    DNSName; anything else is a UsageError."""
    if isinstance(name, x509.GeneralName):
        return name
    if not isinstance(name, str) or not name:
        raise UsageError(f"invalid subject alternative name {name!r}",
                         hint="use a DNS name such as keep.example.com or an IP address")
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    # ASCII first: str.lower() maps some non-ASCII letters to ASCII ones (KELVIN SIGN -> "k"),
    # which would issue a name other than the one the policy checked.
    host = name.removesuffix(".")
    labels = host.split(".")
    if labels and labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if (not host.isascii() or len(host) > 253
            or not all(_DNS_LABEL.fullmatch(label) for label in labels)):
        raise UsageError(
            f"invalid subject alternative name {name[:80]!r}",
            hint="use a DNS name (letters, digits and '-' in dot-separated labels, an "
            "optional leading '*.') or an IP address",
        )
    return x509.DNSName(host.lower())


def general_names(names: Sequence[str | x509.GeneralName]) -> list[x509.GeneralName]:
    """:func:`general_name` of each, duplicates dropped, order kept."""
    out: list[x509.GeneralName] = []
    for n in names:
        g = general_name(n)
        if g not in out:
            out.append(g)
    return out


def _now(now: datetime.datetime | None) -> datetime.datetime:
    if now is None:
        return datetime.datetime.now(datetime.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now


def _sign_hash(key: _SigningKey) -> hashes.SHA256 | hashes.SHA384:
    return hashes.SHA384() if isinstance(key, ec.EllipticCurvePrivateKey) else hashes.SHA256()


class StewardCA:
    """A CA key and its certificate. Build with :meth:`create` or :meth:`from_pem`."""

    def __init__(self, key: _SigningKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert

    # --- construction -------------------------------------------------------------------

    @classmethod
    def create(cls, name: str = "enarx steward CA", *,
               now: datetime.datetime | None = None,
               validity: datetime.timedelta = CA_VALIDITY) -> StewardCA:
        """A new P-384 CA key and a self-signed CA certificate named ``name``."""
        key = ec.generate_private_key(ec.SECP384R1())
        start = _now(now)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64] or "steward")])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start - _BACKDATE)
            .not_valid_after(start + validity)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA384())
        )
        return cls(key, cert)

    @classmethod
    def from_pem(cls, key_pem: bytes, cert_pem: bytes, *, path: str | None = None) -> StewardCA:
        """Load an existing CA (``--key``/``--crt``); ConfigError when they do not fit."""
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise ConfigError(f"the CA key is not an unencrypted PEM private key ({e})",
                              path=path,
                              hint="pass a PKCS#8 or SEC1 PEM key without a passphrase") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ConfigError("the CA key must be an EC or RSA key", path=path)
        try:
            certs = x509.load_pem_x509_certificates(cert_pem)
        except (ValueError, x509.InvalidVersion) as e:
            raise ConfigError(f"the CA certificate is not PEM ({e})", path=path,
                              hint="pass the CA certificate as PEM") from None
        cert = certs[0]
        try:
            cert_key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm) as e:
            raise ConfigError(f"the CA certificate's key cannot be read ({e})", path=path
                              ) from None
        if cert_key != key.public_key():
            raise ConfigError("the CA key does not belong to the CA certificate", path=path,
                              hint="pass the key that matches the certificate")
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except (x509.ExtensionNotFound, ValueError):
            bc = None
        if bc is None or not bc.ca:
            raise ConfigError("the certificate is not a CA certificate (BasicConstraints CA)",
                              path=path,
                              hint="use a certificate with basicConstraints CA:TRUE")
        try:
            ku: Any = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        except (x509.ExtensionNotFound, ValueError):
            ku = None
        if ku is not None and not ku.key_cert_sign:
            raise ConfigError("the CA certificate's key usage does not allow keyCertSign",
                              path=path)
        return cls(key, cert)

    # --- serialisation ------------------------------------------------------------------

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def key_pem(self) -> bytes:
        """The CA key as unencrypted PKCS#8 PEM: store it 0600, never log it."""
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    # --- issuance -----------------------------------------------------------------------

    def issue(
        self,
        public_key: Any,
        sans: Sequence[str | x509.GeneralName],
        validity: datetime.timedelta,
        extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
        serial: int | None = None,
        *,
        now: datetime.datetime | None = None,
        common_name: str = "enarx keep",
    ) -> x509.Certificate:
        """A leaf certificate for ``public_key`` (TLS server and client), signed by this CA.

        Validity runs from a few minutes before ``now`` for ``validity``, cut at the CA's own
        expiry. ``extensions`` are added as given (keep them non-critical).
        """
        if validity <= datetime.timedelta(0):
            raise ValueError("validity must be positive")
        if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            raise UsageError("Ed25519/Ed448 keys are not supported for Keep certificates",
                             hint="use an EC P-256/P-384 key")
        if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise UsageError("unsupported public key type", hint="use an EC P-256/P-384 key")
        start = _now(now)
        ca_end = self.cert.not_valid_after_utc
        if start >= ca_end or start < self.cert.not_valid_before_utc:
            begin = self.cert.not_valid_before_utc
            raise ConfigError(
                f"the CA certificate is not valid now (valid {begin:%Y-%m-%d} to "
                f"{ca_end:%Y-%m-%d})",
                hint="renew the steward's CA (--key/--crt), or check the clock",
            )
        not_after = min(start + validity, ca_end)
        rsa_key = isinstance(public_key, rsa.RSAPublicKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                        common_name[:64] or "keep")]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(serial if serial is not None else x509.random_serial_number())
            .not_valid_before(start - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False,
                    key_encipherment=rsa_key, data_encipherment=False, key_agreement=False,
                    key_cert_sign=False, crl_sign=False, encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key),
                           critical=False)
            .add_extension(self._aki(), critical=False)
        )
        names = general_names(sans)
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        for ext in extensions:
            builder = builder.add_extension(ext.value, critical=ext.critical)
        return builder.sign(self.key, _sign_hash(self.key))

    def server_cert(
        self,
        sans: Sequence[str | x509.GeneralName] = (),
        *,
        now: datetime.datetime | None = None,
        validity: datetime.timedelta = SERVER_VALIDITY,
    ) -> tuple[bytes, bytes]:
        """(key PEM, chain PEM = leaf + CA) for the steward's own TLS listener.

        Covers ``localhost`` and ``127.0.0.1`` plus ``sans``; a fresh P-256 key each call.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.issue(key.public_key(), ["localhost", "127.0.0.1", *sans], validity,
                          now=now, common_name="enarx steward")
        key_pem = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return key_pem, cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem

    def _aki(self) -> x509.AuthorityKeyIdentifier:
        cached: x509.AuthorityKeyIdentifier | None = self.__dict__.get("_aki_cache")
        if cached is None:
            cached = self.__dict__["_aki_cache"] = self._compute_aki()
        return cached

    def _compute_aki(self) -> x509.AuthorityKeyIdentifier:
        try:
            ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        except (x509.ExtensionNotFound, ValueError):
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key())
