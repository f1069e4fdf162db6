"""Who is asking: bearer tokens and steward-issued client certificates.

A bearer token (``enarx registry token create --user U``) acts as user U: it writes U's
repositories and reads U's private ones. A TLS client certificate counts only when the server
was started with ``--steward-ca``: the TLS layer checks the chain, and :func:`client_workload`
checks again here (issuer signature, validity now, the workload extension) so that nothing
rests on the socket layer's configuration alone. The result is the attested workload identity
(``sha384:…``) of the Keep holding the certificate, or None.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from enarx.errors import AttestationError, UsageError

__all__ = ["bearer_token", "client_workload", "load_cas"]


def load_cas(pem: bytes, source: str) -> list[x509.Certificate]:
    try:
        cas = x509.load_pem_x509_certificates(pem)
    except (ValueError, x509.InvalidVersion):
        cas = []
    if not cas:
        raise UsageError(f"{source} holds no PEM certificate",
                         hint="pass the CA `enarx steward ca` prints (--steward-ca PEM)")
    return cas


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None if absent/other)."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    return token


def client_workload(cert_der: bytes | None, cas: Sequence[x509.Certificate],
                    now: dt.datetime | None = None) -> str | None:
    """The workload identity a steward-issued client certificate attests, else None."""
    if not cert_der or not cas:
        return None
    from enarx.steward.extensions import find_workload

    try:
        leaf = x509.load_der_x509_certificate(cert_der)
    except (ValueError, x509.InvalidVersion):
        return None
    now = now or dt.datetime.now(dt.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        return None
    for ca in cas:
        try:
            leaf.verify_directly_issued_by(ca)
            break
        except (InvalidSignature, ValueError, TypeError):
            continue
    else:
        return None
    try:
        _, identity = find_workload(leaf)
    except AttestationError:
        return None
    return identity
