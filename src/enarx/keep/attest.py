"""The Keep's side of the steward exchange: attest, then get a certificate for a one-time key.

Before the workload starts, the Keep (``enarx run --steward URL --steward-ca PEM``):

1. makes a one-time EC P-256 key in memory (never written anywhere; it becomes the TLS key
   of every ``tls`` listener and connect entry of this run);
2. ``POST /kbs/v0/auth`` ``{"version": "0.4.0", "tee", "extra-params"}`` → a nonce and the
   ``kbs-session-id`` cookie;
3. builds the runtime data ``{"nonce", "tee-pubkey": <JWK of the key>, "workload":
   "sha384:…"}``, asks its backend for evidence over ``expected_report_data(runtime data)``
   (SHA-384 of the JCS form, with ``"additional-evidence": ""``, zero-padded to 64 bytes) and
   ``POST /kbs/v0/attest`` → an EAR token, or a refusal listing the failed rules;
4. ``POST /enarx/v1/certificate`` with a CSR for the same key → ``[CA, leaf]``.

Trust in the steward's own TLS certificate comes only from the PEM the user names
(``--steward-ca``); plain ``http://`` is refused. The returned chain is checked here too: the
CA must be that PEM's certificate, the leaf must be signed by it and certify our key.

I/O edge (network); nothing here holds process-global state.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from enarx.errors import AttestationError, ChainInvalid, EnarxError, UsageError

if TYPE_CHECKING:
    from enarx.keep.tls import KeepIdentity
    from enarx.platform.base import Backend

__all__ = [
    "AttestationRefused",
    "Attested",
    "StewardTarget",
    "StewardUnavailable",
    "attest_keep",
    "evidence_for",
    "tee_pubkey_jwk",
]

KBS_VERSION = "0.4.0"
#: what the Keep asks to be certified for besides its listeners' addresses
DEFAULT_SANS = ("localhost", "127.0.0.1", "::1")
CERT_ROUTE = "/enarx/v1/certificate"
_TIMEOUT = 30.0  # seconds for each request to the steward
_MAX_BODY = 1 << 20  # the steward's answers are small; refuse to buffer more


class StewardUnavailable(EnarxError):
    """The steward could not be reached or answered something that is not the protocol."""

    exit_code = 1
    default_hint = "check --steward (or `steward` in Enarx.toml) and that the steward runs"


class AttestationRefused(AttestationError):
    """The steward refused this Keep's evidence; ``failed`` lists each rule that failed."""

    def __init__(self, detail: str, failed: list[dict[str, Any]]) -> None:
        lines = [f"the steward refused this Keep's attestation: {_clean(detail)}"]
        for f in failed:
            line = f"  - {_clean(f.get('rule', '?'))}: {_clean(f.get('message', ''))}"
            if "expected" in f or "actual" in f:
                line += (f" (expected {_clean(repr(f.get('expected')))}, "
                         f"got {_clean(repr(f.get('actual')))})")
            lines.append(line)
        super().__init__(
            "steward.refused",
            "\n".join(lines),
            hint="the workload was not started; fix the failed rules or the steward's policy",
        )
        self.failed = failed

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["failed"] = self.failed
        return out


@dataclass(frozen=True)
class StewardTarget:
    """Where to attest: the steward's https URL and the PEM certificates that may sign its TLS."""

    url: str
    ca_pem: bytes
    #: names the Keep asks to be certified for (the steward's policy may refuse some)
    sans: tuple[str, ...] = DEFAULT_SANS

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "https" or not parts.hostname:
            raise UsageError(
                f"steward URL {self.url!r} is not an https:// URL",
                hint="give the steward's https URL, e.g. https://steward.example.com:3000",
            )
        try:
            _trust(self.ca_pem)
        except (ssl.SSLError, ValueError):
            raise UsageError(
                "the steward CA file holds no PEM certificate",
                hint="pass the steward's CA (`enarx steward ca > steward-ca.pem`) to --steward-ca",
            ) from None

    def with_listeners(self, files: Sequence[Any]) -> StewardTarget:
        """Also ask for the specific addresses (not ``::``/``0.0.0.0``) of ``tls`` listeners,
        so clients that connect by that name or address can check the certificate."""
        sans = list(self.sans)
        for f in files:
            if f.kind == "listen" and f.prot == "tls":
                addr = str(f.addr).strip("[]").lower()
                if addr not in ("::", "0.0.0.0", "") and addr not in sans:
                    sans.append(addr)
        return replace(self, sans=tuple(sans))


@dataclass(frozen=True)
class Attested:
    """The result of a successful attestation: the one-time key (memory only), the issued
    chain (leaf first, then the steward CA) and the EAR token."""

    key: ec.EllipticCurvePrivateKey = field(repr=False)
    chain_der: list[bytes]
    token: str = field(repr=False)
    workload: str

    def identity(self) -> KeepIdentity:
        from enarx.keep.tls import KeepIdentity

        certs = tuple(x509.load_der_x509_certificate(d) for d in self.chain_der)
        return KeepIdentity(key=self.key, chain=certs, self_signed=False)


def tee_pubkey_jwk(
    key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey,
) -> dict[str, str]:
    """The public half of the one-time key as Trustee's ``tee-pubkey`` (EC P-256 JWK)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    nums = public.public_numbers()
    size = (public.curve.key_size + 7) // 8

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(size, "big")).rstrip(b"=").decode()

    return {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": b64(nums.x),
            "y": b64(nums.y)}


def evidence_for(backend: Backend, report_data: bytes) -> tuple[str, dict[str, Any]]:
    """``(tee, tee-evidence)`` binding ``report_data``: SNP (and sim) reports with their
    certificates, SGX/TDX quotes; ``nil``/``kvm`` are Trustee's ``sample`` (no evidence)."""
    tee = _tee_name(backend)
    if tee == "sample":
        return tee, {"primary_evidence": None, "additional_evidence": ""}
    ev = backend.evidence(report_data)
    if ev.kind == "snp-report":
        primary: dict[str, Any] = {"attestation_report": _b64(ev.blob),
                                   "cert_chain": [_b64(c) for c in ev.certs]}
    elif ev.kind in ("tdx-quote", "sgx-quote"):
        primary = {"quote": _b64(ev.blob)}
    else:
        raise StewardUnavailable(f"the {backend.name} backend's {ev.kind!r} evidence has no "
                                 "steward encoding", hint="use the sim or sev-snp backend")
    return tee, {"primary_evidence": primary, "additional_evidence": ""}


def attest_keep(
    target: StewardTarget,
    backend: Backend,
    workload: str,
    *,
    timeout: float = _TIMEOUT,
    signature: dict[str, Any] | None = None,
) -> Attested:
    """Run the whole exchange; raises :class:`AttestationRefused` (exit 4) on a refusal.
    ``signature``: a signed package's ``package-signature`` runtime-data member
    (``steward/signers.py``), bound into the evidence with the rest."""
    from enarx.steward.binding import expected_report_data

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = tee_pubkey_jwk(key)
    with _Session(target, timeout) as s:
        challenge = s.post_json("/kbs/v0/auth",
                                {"version": KBS_VERSION, "tee": _tee_name(backend),
                                 "extra-params": ""})
        nonce = challenge.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise StewardUnavailable("the steward's challenge has no nonce")
        runtime_data: dict[str, Any] = {"nonce": nonce, "tee-pubkey": jwk, "workload": workload}
        if signature is not None:
            runtime_data["package-signature"] = signature
        _, evidence = evidence_for(backend, expected_report_data(runtime_data))
        answer = s.post_json("/kbs/v0/attest",
                             {"runtime-data": runtime_data, "tee-evidence": evidence})
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise StewardUnavailable("the steward's attestation result has no token")
        body = _csr(key, target.sans)
        ctype, data = s.request("POST", CERT_ROUTE, body, "application/pkcs10",
                                accept="application/pem-certificate-chain")
    chain = _check_chain(ctype, data, key, target.ca_pem)
    return Attested(key=key, chain_der=chain, token=token, workload=workload)


# --- helpers --------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _tee_name(backend: Backend) -> str:
    """Trustee's ``tee`` for a backend (sim evidence is SNP-format; no TEE is ``sample``)."""
    return {"sim": "snp", "sev-snp": "snp", "tdx": "tdx", "sgx": "sgx"}.get(backend.name,
                                                                            "sample")


def _trust(ca_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=ca_pem.decode("ascii", errors="replace"))
    return ctx


def _csr(key: ec.EllipticCurvePrivateKey, sans: Sequence[str]) -> bytes:
    names: list[x509.GeneralName] = []
    for san in sans:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "enarx keep")])
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def _check_chain(ctype: str, data: bytes, key: ec.EllipticCurvePrivateKey,
                 ca_pem: bytes) -> list[bytes]:
    """[leaf, CA] as DER, after checking the CA is ours, it signed the leaf, and the leaf
    certifies our key. Accepts a PEM chain or upstream's DER ``SEQ OF Certificate``."""
    try:
        if b"-----BEGIN" in data[:64]:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(d) for d in _der_sequence(data)]
    except (ValueError, x509.InvalidVersion) as e:
        raise StewardUnavailable(f"the steward's certificate answer ({ctype}) does not parse: "
                                 f"{e}") from None
    ours = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)

    def spki(c: x509.Certificate) -> bytes:
        return c.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)

    leaves = [c for c in certs if spki(c) == ours]
    if len(leaves) != 1:
        raise ChainInvalid("steward.chain.leaf",
                           "the steward's chain has no certificate for this Keep's key")
    leaf = leaves[0]
    trusted = x509.load_pem_x509_certificates(ca_pem)
    for ca in trusted:
        try:
            leaf.verify_directly_issued_by(ca)
        except (InvalidSignature, ValueError, TypeError):  # not signed by it / issuer differs
            continue
        return [leaf.public_bytes(serialization.Encoding.DER),
                ca.public_bytes(serialization.Encoding.DER)]
    raise ChainInvalid("steward.chain.issuer",
                       "the certificate issued to this Keep is not signed by the steward CA "
                       "given with --steward-ca")


def _der_sequence(data: bytes) -> list[bytes]:
    """The elements of one DER ``SEQUENCE`` (upstream's ``SEQ OF Certificate``)."""

    def header(buf: bytes, at: int) -> tuple[int, int]:  # (content start, content length)
        if at + 2 > len(buf):
            raise ValueError("truncated DER")
        n = buf[at + 1]
        if n < 0x80:
            return at + 2, n
        k = n & 0x7F
        if not 1 <= k <= 4 or at + 2 + k > len(buf):
            raise ValueError("bad DER length")
        return at + 2 + k, int.from_bytes(buf[at + 2: at + 2 + k], "big")

    if not data or data[0] != 0x30:
        raise ValueError("not a DER SEQUENCE")
    start, length = header(data, 0)
    end = start + length
    if end != len(data):
        raise ValueError("trailing or missing bytes after the SEQUENCE")
    out = []
    at = start
    while at < end:
        s, n = header(data, at)
        if s + n > end:
            raise ValueError("element overruns the SEQUENCE")
        out.append(data[at: s + n])
        at = s + n
    return out


class _Session:
    """One keep-alive HTTPS connection to the steward carrying the session cookie."""

    def __init__(self, target: StewardTarget, timeout: float) -> None:
        parts = urlsplit(target.url)
        self.host = parts.hostname or ""
        self.port = parts.port or 443
        self.prefix = parts.path.rstrip("/")
        self.url = target.url
        self.cookie: str | None = None
        # In a VM Keep a steward on the host's loopback is dialled at the host's side of
        # QEMU's network; the certificate is still checked against the URL's host.
        from enarx.vm.guestnet import https_connection

        self.conn = https_connection(self.host, self.port, timeout=timeout,
                                     context=_trust(target.ca_pem))

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()

    def post_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        _, data = self.request("POST", path, json.dumps(body).encode(), "application/json")
        try:
            out = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            out = None
        if not isinstance(out, dict):
            raise StewardUnavailable(f"{self.url}{path}: the answer is not a JSON object")
        return out

    def request(self, method: str, path: str, body: bytes, ctype: str, *,
                accept: str = "application/json") -> tuple[str, bytes]:
        headers = {"Content-Type": ctype, "Accept": accept}
        if self.cookie:
            headers["Cookie"] = f"kbs-session-id={self.cookie}"
        where = f"{self.url}{path}"
        try:
            self.conn.request(method, self.prefix + path, body=body, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read(_MAX_BODY + 1)
        except ssl.SSLCertVerificationError as e:
            raise ChainInvalid(
                "steward.tls",
                f"{where}: the steward's TLS certificate is not trusted ({e.verify_message})",
                hint="--steward-ca must be the CA that issued the steward's TLS certificate "
                "(`enarx steward ca`)",
            ) from None
        except (OSError, http.client.HTTPException) as e:
            raise StewardUnavailable(f"{where}: {e or type(e).__name__}") from None
        if len(data) > _MAX_BODY:
            raise StewardUnavailable(f"{where}: answer larger than {_MAX_BODY} bytes")
        for value in resp.headers.get_all("Set-Cookie") or ():
            name, _, rest = value.partition("=")
            if name.strip() == "kbs-session-id":
                self.cookie = rest.partition(";")[0].strip()
        if resp.status != 200:
            raise _refusal(where, resp.status, data)
        return resp.headers.get("Content-Type", ""), data


def _refusal(where: str, status: int, data: bytes) -> EnarxError:
    """A non-200 answer: a policy refusal (with its failed rules) or a protocol error."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        body = None
    detail = ""
    failed: list[dict[str, Any]] = []
    kind = ""
    if isinstance(body, dict):
        detail = str(body.get("detail", ""))
        kind = str(body.get("type", "")).rsplit("/", 1)[-1]
        for key in ("failed", "failures", "failed_rules", "violations"):
            items = body.get(key)
            if isinstance(items, list):
                failed = [_rule(i) for i in items]
                break
    if failed or kind in ("PolicyDeny", "AttestationFailed", "EvidenceRefused"):
        return AttestationRefused(detail or kind, failed)
    text = detail or data[:200].decode(errors="replace") or "(empty body)"
    label = f"HTTP {status} {_clean(kind)}" if kind else f"HTTP {status}"
    return StewardUnavailable(f"{where}: {label}: {_clean(text)}")


def _clean(value: Any, limit: int = 500) -> str:
    """Text from the steward, safe for a terminal: no control characters, bounded length."""
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return text if len(text) <= limit else text[:limit] + "..."


def _rule(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        out = {k: item[k] for k in ("rule", "message", "expected", "actual") if k in item}
        out.setdefault("rule", str(item.get("check", "?")))
        return out
    return {"rule": str(item)}

