"""The steward's protocol logic, without HTTP: challenge → evidence → result → certificate.

``Steward`` ties the pure pieces together (``kbs`` payloads, ``policy`` appraisal, ``ear``
tokens, ``ca`` issuance, ``extensions`` codecs, ``upstream`` CSRs) around one ``Store`` that
holds every piece of state (sessions, nonces, issuance records, resources), so replicas that
share a database behave as one service. Every failure is a typed ``StewardError`` (or an
``enarx.errors`` type) that ``app`` turns into a 4xx answer; nothing is recorded unless the
whole request succeeded.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import itertools
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from enarx.attestation.result import VerifiedEvidence
from enarx.attestation.snp.verify import SnpVerifier
from enarx.errors import AttestationError, EnarxError
from enarx.steward.checks import (
    check_binding,
    failures,
    fingerprint,
    load_csr,
    refusal,
    spki,
    verification_failed,
)
from enarx.steward.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    Refused,
    StewardError,
    Unauthorized,
    UnsupportedMediaType,
)
from enarx.steward.policy import Kind, StewardPolicy, appraise

__all__ = [
    "AttestOutcome",
    "BadRequest",
    "Conflict",
    "NotFound",
    "PayloadTooLarge",
    "Refused",
    "Steward",
    "StewardError",
    "Unauthorized",
    "UnsupportedMediaType",
]

log = logging.getLogger("enarx.steward")

NONCE_TTL = dt.timedelta(minutes=5)
SESSION_TTL = dt.timedelta(minutes=5)
TOKEN_TTL = dt.timedelta(minutes=5)


# --- results -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Issue:
    """A certificate ready to issue: everything checked, nothing written yet."""

    csr: x509.CertificateSigningRequest
    sans: list[str]
    exts: list[x509.Extension[Any]]
    evidence_digest: str
    workload: str | None
    status: str
    platform: str
    kind: str
    session_id: str | None


@dataclass(frozen=True)
class AttestOutcome:
    token: str
    status: str
    workload: str | None
    platform: str
    failed: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Checked:
    """What evidence verification found, before appraisal."""

    kind: Kind
    evidence: VerifiedEvidence | None
    vendor_root: bool
    cmw: bytes  # what the certificate will carry (empty for nil/kvm)
    digest: str  # sha384:<hex> of the raw evidence


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Steward:
    """The service: one instance per process, all state in ``store``.

    ``policy`` is a ``steward.policy.StewardPolicy``, ``ca`` a ``steward.ca.StewardCA``,
    ``ear_signer`` a ``steward.ear.EarSigner``, ``store`` a ``steward.store.Store``;
    ``trust_roots`` are the extra (non-vendor) roots the policy names, as PEM/DER;
    ``purge_every``: every that many ``/auth`` calls (and at the first), expired sessions are
    deleted. ``collateral_dir`` holds Intel collateral for TDX/SGX quotes that arrive
    without it. ``signers`` are the public keys of the policy's ``[workload] signers``.
    ``clock`` gives "now"; ``evidence_clock`` (default: ``clock``) the time evidence is
    verified at, so tests can check recorded fixtures as of their capture time.
    """

    def __init__(
        self,
        policy: StewardPolicy,
        ca: Any,
        ear_signer: Any,
        store: Any,
        trust_roots: Sequence[bytes] = (),
        clock: Callable[[], dt.datetime] = _now,
        *,
        verifier_id: str = "enarx-steward",
        sgx_qe_identity: tuple[bytes, bytes] | None = None,
        evidence_clock: Callable[[], dt.datetime] | None = None,
        purge_every: int = 1000,
        collateral_dir: Path | None = None,
        signers: Sequence[Any] = (),
    ) -> None:
        self.policy = policy
        self.ca = ca
        self.ear = ear_signer
        self.store = store
        self.clock = clock
        #: the time evidence is verified at (tests: recorded fixtures, as of their capture)
        self.evidence_clock = evidence_clock or clock
        self.verifier_id = verifier_id
        self.sgx_qe_identity = sgx_qe_identity
        #: Intel collateral for TDX/SGX quotes sent without it (``--collateral DIR``)
        self.collateral_dir = collateral_dir
        self.purge_every = purge_every
        #: EC public keys of ``[workload] signers`` (none loaded with signers named: all refused)
        self.signers = list(signers)
        self._auths = itertools.count()
        self.trust_roots = [bytes(r) for r in trust_roots]
        self._extra_roots = {fingerprint(r) for r in self.trust_roots}
        self.snp = SnpVerifier(self.trust_roots)
        self.cert_validity = dt.timedelta(seconds=policy.validity_seconds)
        self.policy_id: str = policy.policy_id
        self._ca_der: bytes = ca.cert_der
        self._jwks: dict[str, Any] = ear_signer.jwks()

    def jwks(self) -> dict[str, Any]:
        return self._jwks

    # --- KBS: /auth ----------------------------------------------------------------------

    def auth(self, body: bytes) -> tuple[str, dict[str, Any]]:
        """``POST /kbs/v0/auth``: a fresh single-use nonce bound to a new session."""
        from enarx.steward import kbs

        req = kbs.parse_request(body)
        if next(self._auths) % self.purge_every == 0:
            self.purge()  # unauthenticated /auth adds rows: drop the expired ones now and then
        session_id = secrets.token_urlsafe(32)
        challenge = kbs.Challenge.new()
        self.store.create_session(session_id, challenge.nonce, req.tee,
                                  self.clock() + NONCE_TTL)
        return session_id, challenge.to_json()

    def purge(self) -> int:
        """Delete sessions whose challenge and result have both expired; how many."""
        n: int = self.store.purge_expired(self.clock())
        if n:
            log.info(json.dumps({"event": "purge", "sessions": n}))
        return n

    # --- KBS: /attest --------------------------------------------------------------------

    def attest(self, session_id: str | None, body: bytes) -> AttestOutcome:
        """``POST /kbs/v0/attest``: verify, appraise, sign an EAR; one JSON log line."""
        out: AttestOutcome = self._logged("kbs",
                                          lambda info: self._attest(session_id, body, info))
        return out

    def _logged(self, route: str, fn: Callable[[dict[str, Any]], Any]) -> Any:
        started = time.perf_counter()
        info: dict[str, Any] = {"event": "attestation", "route": route}
        try:
            out = fn(info)
            info["result"] = "ok"
            return out
        except EnarxError as exc:
            info["result"] = "refused"
            info["error"] = type(exc).__name__
            info["failed"] = getattr(exc, "failed", None) or [{"message": exc.message}]
            raise
        finally:
            info["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
            log.info(json.dumps(info, sort_keys=True, default=str))

    def _attest(self, session_id: str | None, body: bytes,
                info: dict[str, Any]) -> AttestOutcome:
        from enarx.steward import kbs

        if not session_id:
            raise Unauthorized("no kbs-session-id cookie", hint="POST /kbs/v0/auth first")
        att = kbs.parse_attestation(body)
        rd = att.runtime_data
        now = self.clock()
        # Read, check, verify, then redeem + record in ONE write transaction (one commit).
        # The session row's nonce never changes, so checking it here (constant-time) and
        # claiming the row with `used = 0` in the write is as strict as redeeming first;
        # a refusal after this point spends the nonce (``_spend``), as before.
        session = self.store.get_session(session_id)
        if (session is None or session.used or session.expires_at <= now.timestamp()
                or not hmac.compare_digest(session.nonce.encode(),
                                           rd.nonce.encode(errors="surrogatepass"))):
            raise Unauthorized("unknown session, or its nonce was already used or expired",
                               hint="start again with POST /kbs/v0/auth")
        info["tee"] = session.tee
        workload = rd.workload
        info["workload"] = workload
        additional = att.tee_evidence.additional_evidence
        # One JCS serialisation: its SHA-384 is REPORT_DATA and its bytes go in the CMW.
        runtime_json = kbs.runtime_data_jcs(rd, additional)
        expected = kbs.report_data_for(runtime_json)
        try:
            checked = self._verify_kbs(session.tee, att, runtime_json, expected, now)
            info["platform"] = checked.kind
            appraisal = appraise(
                self.policy, checked.evidence, kind=checked.kind,
                vendor_root=checked.vendor_root, workload=workload, workload_bound=True)
            info["status"] = appraisal.status
            failed = failures(appraisal) + self._signature_failures(rd.package_signature,
                                                                     workload)
            if failed:
                raise refusal("attestation refused by the steward's policy", failed)
        except EnarxError:
            self._spend(session_id, rd.nonce, now)
            raise
        pub_json = json.dumps(rd.tee_pubkey, sort_keys=True, separators=(",", ":"))
        token = self._sign_ear(checked, appraisal, rd.nonce, rd.tee_pubkey, workload, now)
        if not self.store.attest_session(session_id, now, token, pub_json, workload,
                                         checked.digest, now + SESSION_TTL,
                                         evidence=checked.cmw):
            raise Unauthorized("unknown session, or its nonce was already used or expired",
                               hint="start again with POST /kbs/v0/auth")
        return AttestOutcome(token=token, status=appraisal.status, workload=workload,
                             platform=checked.kind)

    def _signature_failures(self, doc: Any, workload: str | None) -> list[dict[str, Any]]:
        """``[workload] signers``: the presented package signature (steward/signers.py)."""
        if not (self.policy.workload.signers or self.signers):
            return []
        from enarx.steward.signers import check_signature

        bad = check_signature(doc, self.signers, workload)
        return [] if bad is None else [bad]

    def _spend(self, session_id: str, nonce: str, now: dt.datetime) -> None:
        """A refused attestation uses up the session's nonce (no retry with the same one)."""
        # The refusal is what the Keep must see; an unspent nonce still expires.
        with contextlib.suppress(EnarxError):
            self.store.redeem_nonce(session_id, nonce, now)

    def _verify_kbs(self, tee: str, att: Any, runtime_json: bytes, expected: bytes,
                    now: dt.datetime) -> _Checked:
        from enarx.steward import extensions, kbs

        if tee == "sample":
            return _Checked("nil", None, False, b"", "none")
        if tee in ("tdx", "sgx"):
            return self._verify_dcap("tdx" if tee == "tdx" else "sgx", att, runtime_json,
                                     expected)
        if tee != "snp":
            raise BadRequest(f"tee {tee!r} is not supported by this steward",
                             hint='use tee "snp" (SEV-SNP and the sim backend), "tdx", "sgx" '
                             'or "sample" (nil)')
        snp = kbs.parse_snp_evidence(att.tee_evidence)
        ev = self._verify_snp(snp.report, snp.cert_chain, (), self.evidence_clock())
        check_binding(ev, expected)
        vendor = self._vendor_root(ev)
        cmw = extensions.encode_cmw(extensions.CmwEvidence(
            "snp", snp.report, tuple(snp.cert_chain), runtime_json))
        return _Checked("snp" if vendor else "sim", ev, vendor, cmw,
                        "sha384:" + hashlib.sha384(snp.report).hexdigest())

    def _verify_dcap(self, tee: Kind, att: Any, runtime_json: bytes,
                     expected: bytes) -> _Checked:
        from enarx.steward import dcap_kbs, extensions

        dcap = dcap_kbs.parse_dcap_evidence(att.tee_evidence.primary_evidence)
        try:
            ev = dcap_kbs.verify_dcap(tee, dcap, at=self.evidence_clock(),
                                      collateral_dir=self.collateral_dir)
        except AttestationError as exc:
            raise verification_failed(exc) from None
        check_binding(ev, expected)
        cmw = extensions.encode_cmw(extensions.CmwEvidence(tee, dcap.quote, (), runtime_json))
        return _Checked(tee, ev, True, cmw, "sha384:" + hashlib.sha384(dcap.quote).hexdigest())

    def _verify_snp(self, report: bytes, certs: Sequence[bytes], crls: Sequence[bytes],
                    at: dt.datetime) -> VerifiedEvidence:
        if not certs:
            raise BadRequest("SNP evidence without cert_chain",
                             hint="send the VCEK (and ASK, ARK) in primary_evidence.cert_chain")
        try:
            return self.snp.verify(report, cert=certs[0], chain=certs[1:], crls=crls, at=at)
        except AttestationError as exc:
            raise verification_failed(exc) from None

    def _vendor_root(self, ev: VerifiedEvidence) -> bool:
        return bool(ev.chain) and ev.chain[-1].sha256 not in self._extra_roots

    def _sign_ear(self, checked: _Checked, appraisal: Any, nonce: str,
                  tee_pubkey: dict[str, Any] | None, workload: str | None,
                  now: dt.datetime) -> str:
        from enarx.steward import ear

        claims = ear.build_ear(
            status=appraisal.status,
            vector=appraisal.vector,
            policy_id=self.policy_id,
            verifier_id=self.verifier_id,
            nonce=nonce,
            tee_pubkey=tee_pubkey,
            workload=workload,
            platform=checked.kind,
            evidence=checked.evidence,
            now=now,
            ttl=TOKEN_TTL,
        )
        token: str = self.ear.sign(claims)
        return token

    # --- our route: certificate for the attested key -------------------------------------

    def issue_for_session(self, session_id: str | None, csr_der: bytes) -> list[bytes]:
        """``POST /enarx/v1/certificate``: one certificate for the session's attested key."""
        from enarx.steward import extensions, kbs

        if not session_id:
            raise Unauthorized("no kbs-session-id cookie", hint="attest first (/kbs/v0/auth, "
                               "/kbs/v0/attest), then send the CSR with the session cookie")
        csr = load_csr(csr_der)
        now = self.clock()
        session = self.store.get_session(session_id)
        if (session is None or not session.token or session.attested_expires_at is None
                or session.attested_expires_at <= now.timestamp()):
            raise Unauthorized("the session is unknown, expired or not attested",
                               hint="attest first with POST /kbs/v0/attest")
        if session.issued_serial:
            raise Conflict("this session already has its certificate",
                           hint="one attestation = one certificate: attest again for another")
        # Our own result, read back from our own database (which also holds the CA key):
        # decoding suffices; its lifetime is the session's attested_expires_at.
        claims = _token_claims(session.token)
        sub = claims["submods"]["cpu0"]
        pub = kbs.jwk_spki(json.loads(session.tee_pubkey or "{}"))
        if not hmac.compare_digest(spki(csr.public_key()), pub):
            raise Unauthorized("the CSR's key is not the key this session attested",
                               hint="sign the CSR with the tee-pubkey sent to /kbs/v0/attest")
        workload = session.workload
        exts: list[x509.Extension[Any]] = [extensions.workload_extension(workload)]
        cmw = getattr(session, "evidence", None)
        if cmw:
            exts.insert(0, x509.Extension(extensions.OID_CMW, False,
                                          x509.UnrecognizedExtension(extensions.OID_CMW, cmw)))
        annotated = sub.get("ear.veraison.annotated-evidence", {})
        return self._issue(_Issue(csr, self._sans(csr), exts,
                                  evidence_digest=session.evidence_digest or "none",
                                  workload=workload, status=str(sub["ear.status"]),
                                  platform=str(annotated.get("platform", "")), kind="kbs",
                                  session_id=session_id), now)

    def _sans(self, csr: x509.CertificateSigningRequest) -> list[str]:
        try:
            ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return []
        except ValueError:
            raise BadRequest("the CSR's extensions do not parse") from None
        names: list[str] = []
        for gn in ext.value:
            if isinstance(gn, x509.DNSName | x509.IPAddress):
                names.append(str(gn.value))
            else:
                raise BadRequest(f"unsupported SAN type in the CSR: {type(gn).__name__}",
                                 hint="ask for DNS names or IP addresses only")
        allowed = list(self.policy.sans)
        bad = [n for n in names if not self.policy.san_allowed(n)]
        if bad:
            raise Refused("the CSR asks for names the policy does not allow",
                          failed=[{"rule": "sans", "expected": allowed, "actual": bad,
                                   "message": "SAN not allowed by the policy's `sans`"}])
        return names

    def _issue(self, job: _Issue, now: dt.datetime) -> list[bytes]:
        cert = self.ca.issue(job.csr.public_key(), job.sans, self.cert_validity,
                             list(job.exts), now=now)
        serial = f"{cert.serial_number:x}"
        if not self.store.record_issuance(serial, now, job.evidence_digest, job.workload,
                                          job.status, self.policy_id, job.platform, job.kind,
                                          session_id=job.session_id):
            raise Conflict("this session already has its certificate",
                           hint="one attestation = one certificate: attest again for another")
        log.info(json.dumps({"event": "issuance", "serial": serial, "kind": job.kind,
                             "platform": job.platform, "workload": job.workload,
                             "status": job.status}, sort_keys=True))
        return [self._ca_der, cert.public_bytes(serialization.Encoding.DER)]

    # --- upstream: POST / ----------------------------------------------------------------

    def upstream_issue(self, csr_der: bytes) -> list[bytes]:
        """Upstream Enarx ``POST /`` (application/pkcs10) → ``[CA, leaf]`` DER."""
        ca, [leaf] = self.upstream_bundle([csr_der])
        return [ca, leaf]

    def upstream_bundle(self, csrs: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
        """``application/vnd.steward.pkcs10-bundle.v1``: (CA, leaves). Every CSR is verified
        and appraised before any certificate is issued, so a bad one issues none."""
        prepared = [self._logged("upstream", partial(self._upstream, der)) for der in csrs]
        now = self.clock()
        leaves = [self._issue(p, now)[1] for p in prepared]
        return self._ca_der, leaves

    def _upstream(self, csr_der: bytes, info: dict[str, Any]) -> _Issue:
        from enarx.steward import extensions, upstream

        csr = load_csr(csr_der)
        up = upstream.parse_upstream_csr(csr_der)
        info["tee"] = up.kind
        try:
            ev = upstream.verify_upstream(up, at=self.evidence_clock(), snp_verifier=self.snp,
                                          sgx_qe_identity=self.sgx_qe_identity)
        except AttestationError as exc:
            raise verification_failed(exc) from None
        vendor = ev is not None and (ev.platform != "snp" or self._vendor_root(ev))
        kind: Kind = up.kind if vendor or ev is None else "sim"
        info["platform"] = kind
        appraisal = appraise(self.policy, ev, kind=kind, vendor_root=vendor, workload=None,
                             workload_bound=False)
        info["status"] = appraisal.status
        failed = failures(appraisal) + self._signature_failures(None, None)
        if failed:
            raise refusal("attestation refused by the steward's policy", failed)
        exts: list[x509.Extension[Any]] = [extensions.workload_extension(None)]
        digest = "none"
        if ev is not None:
            platform = "snp" if up.kind == "snp" else "sgx"
            certs = up.certs if up.kind == "snp" else ()
            exts.insert(0, extensions.cmw_extension(extensions.CmwEvidence(
                platform, up.report, tuple(certs), b"")))
            if up.kind == "sgx":  # the interoperable RA-TLS form too
                exts.insert(1, extensions.ratls_extension(up.report, up.spki_der))
            digest = "sha384:" + hashlib.sha384(up.report).hexdigest()
        return _Issue(csr, self._sans(csr), exts, evidence_digest=digest, workload=None,
                      status=str(appraisal.status), platform=kind, kind="upstream",
                      session_id=None)

    # --- KBS: resources ------------------------------------------------------------------

    def resource(self, session_id: str | None, bearer: str | None, path: str) -> dict[str, Any]:
        """``GET /kbs/v0/resource/<repo>/<type>/<tag>`` → flattened JWE to the tee-pubkey."""
        from enarx.steward import ear, kbs

        now = self.clock()
        token: str | None = bearer
        if token is None and session_id:
            session = self.store.get_session(session_id)
            if (session is not None and session.token and session.attested_expires_at
                    and session.attested_expires_at > now.timestamp()):
                token = session.token
        if not token:
            raise Unauthorized("no attested session or token",
                               hint="attest first, then send the cookie or "
                               "`Authorization: Bearer <token>`")
        try:
            claims = ear.verify_ear(token, self._jwks, now)
        except EnarxError as exc:
            raise Unauthorized(f"token refused: {exc.message}") from None
        sub = claims.get("submods", {}).get("cpu0", {})
        annotated = sub.get("ear.veraison.annotated-evidence", {})
        rdc = annotated.get("runtime_data_claims", {})
        tee_pubkey = rdc.get("tee-pubkey")
        workload = rdc.get("workload")
        platform = annotated.get("platform")
        insecure_allowed = platform in ("sim", "nil", "kvm") and platform in self.policy.allow
        if sub.get("ear.status") != "affirming" and not insecure_allowed:
            raise Refused(f"resource {path} needs an affirming attestation",
                          failed=[{"rule": "ear.status", "expected": "affirming",
                                   "actual": sub.get("ear.status"),
                                   "message": "only affirming Keeps receive secrets"}])
        if not self.policy.may_receive(path, workload):
            raise Refused(f"the policy does not release {path} to this workload",
                          failed=[{"rule": "resources", "expected": path, "actual": workload,
                                   "message": "resource not granted to this workload"}])
        data = self.store.get_resource(path)
        if data is None:
            raise NotFound(f"no resource {path}")
        if not isinstance(tee_pubkey, dict):
            raise Unauthorized("the token carries no tee-pubkey")
        jwe: dict[str, Any] = kbs.encrypt_resource(data, tee_pubkey)
        return jwe

    def put_resource(self, path: str, data: bytes) -> None:
        self.store.put_resource(path, data, self.clock())

    def delete_resource(self, path: str) -> bool:
        return bool(self.store.delete_resource(path))


def _token_claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(
        token.split(".")[1] + "=" * (-len(token.split(".")[1]) % 4)))
    return claims
