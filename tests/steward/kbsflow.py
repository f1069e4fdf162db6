"""Client side of the steward protocol for the service/app/server tests: what a Keep sends.

Evidence is real: the ``sim`` backend signs genuine-format SNP reports over the exact
REPORT_DATA the key-broker protocol requires, so the steward's real SNP verifier checks them.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from anyio.from_thread import start_blocking_portal
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from enarx.platform.sim import SimBackend
from enarx.steward import kbs

__all__ = [
    "AsgiClient",
    "Clock",
    "attest_body",
    "csr_der",
    "new_key",
    "policy_text",
    "public_jwk",
    "sim_state",
]

WORKLOAD = "sha384:" + "ab" * 48
OTHER_WORKLOAD = "sha384:" + "cd" * 48


def sim_state(tmp_path_factory: Any) -> Path:
    # One sim chain per test session (RSA-4096 keys are slow to make): the same directory
    # the platform tests use.
    path: Path = tmp_path_factory.getbasetemp() / "sim-state"
    return path


class Clock:
    """An adjustable "now" for the steward (expiry tests)."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    jwk = dict(ECKey.import_key(key.public_key()).as_dict(private=False))
    jwk["alg"] = "ECDH-ES+A256KW"
    return jwk


def attest_body(sim: SimBackend | None, nonce: str, key: ec.EllipticCurvePrivateKey, *,
                workload: str | None = None, bind_key: ec.EllipticCurvePrivateKey | None = None,
                bind_nonce: str | None = None) -> dict[str, Any]:
    """The /kbs/v0/attest body; ``bind_key``/``bind_nonce`` make evidence for another key or
    nonce than the one sent (forgery attempts)."""
    rd: dict[str, Any] = {"nonce": nonce, "tee-pubkey": public_jwk(key)}
    if workload is not None:
        rd["workload"] = workload
    bound = dict(rd)
    if bind_key is not None:
        bound["tee-pubkey"] = public_jwk(bind_key)
    if bind_nonce is not None:
        bound["nonce"] = bind_nonce
    if sim is None:
        primary: Any = None
    else:
        ev = sim.evidence(kbs.expected_report_data(bound, ""))
        primary = {"attestation_report": base64.b64encode(ev.blob).decode(),
                   "cert_chain": [base64.b64encode(c).decode() for c in ev.certs]}
    return {"runtime-data": rd,
            "tee-evidence": {"primary_evidence": primary, "additional_evidence": ""}}


def csr_der(key: Any, sans: Sequence[str] = ()) -> bytes:
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]),
                            critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def policy_text(ark: Path | None, *, allow: Sequence[str] = ("sim",), extra: str = "") -> str:
    lines = [f"allow = {list(allow)!r}".replace("'", '"')]
    if ark is not None:
        lines.append(f'trust_roots = ["{ark}"]')
    lines.append(extra)
    return "\n".join(lines) + "\n"


class AsgiClient:
    """A synchronous client over ``httpx.ASGITransport`` (the app runs in process; any
    exception it raises is re-raised here, so a bug is never mistaken for a 4xx)."""

    def __init__(self, app: Any, base_url: str = "https://testserver") -> None:
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                        base_url=base_url)

    @property
    def cookies(self) -> httpx.Cookies:
        return self.client.cookies

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            return await self.client.request(method, url, **kw)

        return self._portal.call(go)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", url, **kw)

    def close(self) -> None:
        self._portal.call(self.client.aclose)
        self._portal_cm.__exit__(None, None, None)
