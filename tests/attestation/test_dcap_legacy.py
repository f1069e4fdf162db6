"""SGX quotes with TCB Info v2 collateral (attestation/dcap/legacy.py): the real dcaprs-sgx-v3
vector verifies, every tampered part is rejected naming its check, expired or foreign
collateral is refused, and the TCB/QE matching rules agree with dcap-qvl on the v3 vectors."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enarx.attestation.dcap import parse_quote, verify_quote
from enarx.attestation.dcap.collateral import signed_json_value
from enarx.attestation.dcap.legacy import (
    QeIdentity,
    TcbLevel,
    check_qe_identity,
    match_tcb_level,
    merge_status,
    parse_qe_identity,
    parse_tcb_info_v2,
    verify_chain,
    verify_sgx_tcb_info_v2,
)
from enarx.attestation.dcap.verify import shipped_root, shipped_root_der
from enarx.attestation.result import TcbStatus
from enarx.errors import (
    AttestationError,
    ChainInvalid,
    MalformedEvidence,
    SignatureInvalid,
    TcbMismatch,
)
from tests.attestation.dcap_support import DcapVector, load_dcap

UTC = dt.UTC


@pytest.fixture(scope="module")
def v2() -> DcapVector:
    return load_dcap("sgx", "dcaprs-sgx-v3")


def _flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    b = bytearray(data)
    b[offset] ^= mask
    return bytes(b)


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _tcb_info(v: DcapVector) -> Any:
    body, _ = signed_json_value(v.files["tcb_info.json"], "tcbInfo", "tcb_info")
    return parse_tcb_info_v2(body)


def _qe_identity(v: DcapVector) -> QeIdentity:
    body, _ = signed_json_value(v.files["qe_identity.json"], "enclaveIdentity", "qe_identity")
    return parse_qe_identity(body)


def _pck_ext(v: DcapVector) -> Any:
    import dcap_qvl

    return dcap_qvl.parse_pck_extension_from_pem(parse_quote(v.quote).sig.pck_chain_pem())


# --- the real vector -------------------------------------------------------------------------


def test_v2_vector_is_valid_out_of_date_at_verify_at(v2: DcapVector) -> None:
    ev = v2.verify()
    assert ev.tcb.status is TcbStatus.OUT_OF_DATE and ev.tcb.advisory_ids == ()
    # The PCK certificate's TCB (SOURCE.md: 12,12,3,3,255,255,1,0..., PCESVN 13, QE ISVSVN 9).
    assert [ev.tcb.reported[f"sgx_comp{i:02d}"] for i in range(1, 8)] == [12, 12, 3, 3, 255, 255, 1]
    assert ev.tcb.reported["pce_svn"] == 13 and ev.tcb.reported["qe_isv_svn"] == 9
    assert ev.attributes["pce_id"] == b"\0\0" and ev.attributes["sgx_type"] == 1
    assert ev.measurement.hex().startswith("a4f45c39") and ev.signer.hex().startswith("1bda23eb")
    # The level behind that status is the 2023-08-09 one; the QE itself is up to date.
    ext = _pck_ext(v2)
    level = match_tcb_level(_tcb_info(v2).levels, bytes(ext.cpu_svn), ext.pce_svn)
    assert (level.status, level.tcb_date) == ("OutOfDate", "2023-08-09T00:00:00Z")
    qe = check_qe_identity(parse_quote(v2.quote).sig.qe_report, _qe_identity(v2))
    assert (qe.status, qe.isv_svn) == ("UpToDate", 8)


def test_dcap_qvl_still_cannot_decode_tcb_info_v2(v2: DcapVector) -> None:
    """Why legacy.py exists; when this fails, dcap-qvl learned v2 and legacy.py can go."""
    import dcap_qvl

    with pytest.raises(ValueError, match="TcbInfo"):
        dcap_qvl.verify_with_root_ca(v2.quote, v2.collateral().to_dcap_qvl(), shipped_root_der(),
                                     int(v2.verify_at.timestamp()))


def test_direct_call_equals_verify_quote(v2: DcapVector) -> None:
    direct = verify_sgx_tcb_info_v2(parse_quote(v2.quote), v2.collateral(), at=v2.verify_at,
                                    root=shipped_root())
    assert direct == v2.verify()


def test_explicit_intel_trust_root_is_accepted(v2: DcapVector) -> None:
    root = (v2.folder / "root_ca.der").read_bytes()
    assert v2.verify(trust_root=root).tcb.status is TcbStatus.OUT_OF_DATE


# --- tampering -------------------------------------------------------------------------------

# SGX quote v3: header 48 | report 384 | sig_data_len 4 | signature 64 | attestation key 64 |
# QE report 384 | QE report signature 64 | auth data size 2 | auth data | cert data ...
SIG, KEY, QE, QE_SIG, AUTH = 436, 500, 564, 948, 1014


def test_layout_offsets_match_the_parser(v2: DcapVector) -> None:
    q = parse_quote(v2.quote)
    assert v2.quote[SIG:KEY] == q.sig.signature and v2.quote[KEY:QE] == q.sig.attestation_key
    assert v2.quote[QE_SIG:QE_SIG + 64] == q.sig.qe_report_signature
    assert v2.quote[AUTH:AUTH + 32] == q.sig.qe_auth_data


@pytest.mark.parametrize(("offset", "check"), [
    (30, "dcap.quote.signature"),  # header user data
    (48 + 100, "dcap.quote.signature"),  # MRENCLAVE
    (48 + 383, "dcap.quote.signature"),  # REPORT_DATA
    (SIG + 5, "dcap.quote.signature"),
    (SIG + 40, "dcap.quote.signature"),
    (KEY + 10, "dcap.qe_report.hash"),  # the QE certified another key
    (QE + 40, "dcap.qe_report.signature"),
    (QE + 320, "dcap.qe_report.signature"),  # QE REPORT_DATA (the binding itself)
    (QE_SIG + 3, "dcap.qe_report.signature"),
    (AUTH, "dcap.qe_report.hash"),  # auth data is bound only through the QE's hash
])
def test_tampered_quote_is_rejected(v2: DcapVector, offset: int, check: str) -> None:
    with pytest.raises(SignatureInvalid) as err:
        v2.verify(_flip(v2.quote, offset))
    assert err.value.check == check
    if check == "dcap.qe_report.hash":
        assert err.value.expected != err.value.actual


def _edit_pem_cert(quote: bytes, index: int, edit: Any) -> bytes:
    """Apply ``edit(der: bytearray)`` to the index-th embedded certificate, keeping PEM size."""
    start = -1
    for _ in range(index + 1):
        start = quote.index(b"-----BEGIN CERTIFICATE-----", start + 1)
    end = quote.index(b"-----END CERTIFICATE-----", start)
    body = quote[start + 27 : end]
    der = bytearray(base64.b64decode(b"".join(body.split())))
    edit(der)
    b64 = base64.b64encode(bytes(der))
    new = b"\n" + b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64)) + b"\n"
    assert len(new) == len(body)
    return quote[: start + 27] + new + quote[end:]


def _flip_in_pem_cert(quote: bytes, index: int, from_end: int) -> bytes:
    def flip(der: bytearray) -> None:
        der[len(der) - from_end] ^= 0x01

    return _edit_pem_cert(quote, index, flip)


def test_pck_certificate_with_an_invalid_version_is_malformed(v2: DcapVector) -> None:
    """cryptography raises InvalidVersion (not a ValueError) for these; found by fuzzing."""
    def bad_version(der: bytearray) -> None:
        i = der.index(bytes.fromhex("a003020102"))  # [0] EXPLICIT INTEGER 2 (= X.509 v3)
        der[i + 4] = 7

    with pytest.raises(MalformedEvidence) as err:
        v2.verify(_edit_pem_cert(v2.quote, 0, bad_version))
    assert err.value.check == "dcap.chain.format"


def test_crl_with_an_invalid_version_is_malformed(v2: DcapVector) -> None:
    crl = v2.files["root_ca_crl.der"]
    assert crl[7:10] == b"\x02\x01\x01"  # version INTEGER 1 (= v2)
    with pytest.raises(MalformedEvidence) as err:
        v2.verify(collateral=v2.collateral(root_ca_crl=crl[:9] + b"\x73" + crl[10:]))
    assert err.value.check == "dcap.crl.format"


@pytest.mark.parametrize("index", [0, 1], ids=["pck-leaf", "platform-ca"])
def test_tampered_pck_chain_is_rejected(v2: DcapVector, index: int) -> None:
    with pytest.raises(ChainInvalid) as err:
        v2.verify(_flip_in_pem_cert(v2.quote, index, 5))
    assert err.value.check == "dcap.chain.signature"


def _edit(doc: bytes, old: bytes, new: bytes) -> bytes:
    assert doc.count(old) >= 1
    return doc.replace(old, new, 1)


@pytest.mark.parametrize(("old", "new"), [
    (b'"tcbEvaluationDataNumber":17', b'"tcbEvaluationDataNumber":18'),
    (b'"tcbStatus":"OutOfDate"', b'"tcbStatus":"UpToDate"'),  # the upgrade an attacker wants
    (b'"sgxtcbcomp01svn":12', b'"sgxtcbcomp01svn":11'),
])
def test_tampered_tcb_info_body_breaks_its_signature(v2: DcapVector, old: bytes,
                                                      new: bytes) -> None:
    doc = _edit(v2.files["tcb_info.json"], old, new)
    with pytest.raises(SignatureInvalid) as err:
        v2.verify(collateral=v2.collateral(tcb_info=doc))
    assert err.value.check == "dcap.tcb_info.signature"


def _flip_signature(doc: bytes) -> bytes:
    sig = json.loads(doc)["signature"]
    bad = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
    return doc.replace(sig.encode(), bad.encode())


def test_tampered_tcb_info_signature_or_reserialised_body(v2: DcapVector) -> None:
    pretty = json.dumps(json.loads(v2.files["tcb_info.json"]), indent=1).encode()
    for doc in (_flip_signature(v2.files["tcb_info.json"]), pretty):
        with pytest.raises(SignatureInvalid) as err:
            v2.verify(collateral=v2.collateral(tcb_info=doc))
        assert err.value.check == "dcap.tcb_info.signature"


@pytest.mark.parametrize("how", ["body", "signature"])
def test_tampered_qe_identity_is_rejected(v2: DcapVector, how: str) -> None:
    doc = v2.files["qe_identity.json"]
    doc = _edit(doc, b'"isvprodid":1', b'"isvprodid":2') if how == "body" else _flip_signature(doc)
    with pytest.raises(SignatureInvalid) as err:
        v2.verify(collateral=v2.collateral(qe_identity=doc))
    assert err.value.check == "dcap.qe_identity.signature"


def test_tampered_pck_crl_signature(v2: DcapVector) -> None:
    with pytest.raises(ChainInvalid) as err:
        v2.verify(collateral=v2.collateral(pck_crl=_flip(v2.files["pck_crl.der"], -3)))
    assert err.value.check == "dcap.crl.signature"


def test_missing_root_ca_crl_leaves_revocation_unknown(v2: DcapVector) -> None:
    with pytest.raises(ChainInvalid) as err:
        v2.verify(collateral=v2.collateral(root_ca_crl=v2.files["pck_crl.der"]))
    assert err.value.check == "dcap.crl.missing"


def test_other_platforms_quote_with_this_collateral() -> None:
    """zkdcap's quote (Processor CA, FMSPC 00906ED50000) against dcaprs' v2 collateral: with the
    Platform CA CRL its PCK's revocation is unknown; with its own CRL the FMSPC differs."""
    v2 = load_dcap("sgx", "dcaprs-sgx-v3")
    other = load_dcap("sgx", "zkdcap-sgx-v3")
    with pytest.raises(ChainInvalid) as err:
        verify_quote(other.quote, v2.collateral(), at=v2.verify_at)
    assert err.value.check == "dcap.crl.missing"
    own_crl = v2.collateral(pck_crl=other.files["pck_crl.der"])
    with pytest.raises(TcbMismatch) as mis:
        verify_quote(other.quote, own_crl, at=v2.verify_at)
    assert mis.value.check == "dcap.tcb_info.fmspc"
    assert (mis.value.expected, mis.value.actual) == (bytes.fromhex("00906ed50000"),
                                                      bytes.fromhex("00606a000000"))


# --- time ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("at", "check", "bound"), [
    ("2025-02-13T03:00:00Z", "dcap.collateral.not_yet_valid", "after 2025-02-13T03:29:42Z"),
    ("2025-02-13T03:35:00Z", "dcap.collateral.not_yet_valid", "after 2025-02-13T03:40:28Z"),
    ("2025-03-15T03:29:43Z", "dcap.collateral.expired", "before 2025-03-15T03:29:42Z"),
])
def test_collateral_windows(v2: DcapVector, at: str, check: str, bound: str) -> None:
    """Before TCB Info's issueDate; after it but before the PCK CRL's thisUpdate; one second
    after TCB Info's nextUpdate."""
    with pytest.raises(ChainInvalid) as err:
        v2.verify(at=_at(at))
    assert (err.value.check, err.value.expected) == (check, bound)
    assert err.value.actual == at


def test_window_ends_are_inclusive(v2: DcapVector) -> None:
    for at in ("2025-02-13T03:40:28Z", "2025-03-15T03:29:42Z"):
        assert v2.verify(at=_at(at)).tcb.status is TcbStatus.OUT_OF_DATE


def test_todays_date_is_expired(v2: DcapVector) -> None:
    now = dt.datetime.now(UTC)
    assert now > _at("2025-03-15T03:29:42Z")  # the collateral's windows closed long ago
    with pytest.raises(ChainInvalid) as err:
        v2.verify(at=now)
    assert err.value.check == "dcap.collateral.expired"
    assert err.value.expected == "before 2025-03-15T03:29:42Z" and err.value.hint


def test_expired_tcb_signing_certificate(v2: DcapVector) -> None:
    certs = x509.load_pem_x509_certificates(v2.files["tcb_info_issuer_chain.pem"])
    crls = [x509.load_der_x509_crl(v2.files[n]) for n in ("pck_crl.der", "root_ca_crl.der")]
    root = x509.load_der_x509_certificate(shipped_root_der())
    verify_chain(certs, root, crls, v2.verify_at, "tcb")
    with pytest.raises(ChainInvalid) as err:
        verify_chain(certs, root, crls, _at("2025-06-01T00:00:00Z"), "tcb")
    assert (err.value.check, err.value.expected) == ("dcap.chain.expired",
                                                     "before 2025-05-21T10:50:10Z")


# --- foreign roots ---------------------------------------------------------------------------


def _self_signed(cn: str = "Intel SGX Root CA") -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
    start = dt.datetime(2020, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=20000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_foreign_trust_root_rejects_intel_evidence(v2: DcapVector) -> None:
    with pytest.raises(ChainInvalid) as err:
        v2.verify(trust_root=_self_signed())
    assert err.value.check == "dcap.chain.root"


@pytest.mark.parametrize("role", ["tcb_info_issuer_chain", "qe_identity_issuer_chain"])
def test_collateral_chain_ending_in_a_foreign_root(v2: DcapVector, role: str) -> None:
    chain = v2.files[f"{role}.pem"]
    leaf = chain[: chain.index(b"-----END CERTIFICATE-----") + 26]
    with pytest.raises(ChainInvalid) as err:
        v2.verify(collateral=v2.collateral(**{role: leaf + _self_signed()}))
    assert err.value.check == "dcap.chain.root"
    assert err.value.expected != err.value.actual


# --- matching rules on parsed structures -----------------------------------------------------


def test_tcb_level_matching_takes_the_first_level_in_order(v2: DcapVector) -> None:
    levels = _tcb_info(v2).levels
    assert len(levels) == 11
    top = bytes([14, 14, 3, 3, 255, 255, 1] + [0] * 9)
    assert match_tcb_level(levels, top, 13).status == "SWHardeningNeeded"
    assert match_tcb_level(levels, bytes([255] * 16), 255) is levels[0]
    no_comp07 = bytes([14, 14, 3, 3, 255, 255, 0] + [0] * 9)
    assert match_tcb_level(levels, no_comp07, 13).status == "ConfigurationAndSWHardeningNeeded"
    # PCESVN 12 skips every pcesvn-13 level down to the one asking for 11.
    assert match_tcb_level(levels, top, 12) is levels[8]


@pytest.mark.parametrize(("cpu_svn", "pce_svn"), [
    (bytes(16), 13),  # every component too low
    (bytes([14, 14, 3, 3, 254, 255, 1] + [0] * 9), 13),  # one component under every level
    (bytes([255] * 16), 4),  # PCESVN under every level (lowest asks for 5)
])
def test_no_matching_tcb_level(v2: DcapVector, cpu_svn: bytes, pce_svn: int) -> None:
    with pytest.raises(TcbMismatch) as err:
        match_tcb_level(_tcb_info(v2).levels, cpu_svn, pce_svn)
    assert err.value.check == "dcap.tcb.no_match" and "No matching TCB level" in err.value.message
    assert err.value.actual == {"cpu_svn": list(cpu_svn), "pce_svn": pce_svn}
    assert err.value.hint


def test_no_levels_at_all_matches_nothing() -> None:
    with pytest.raises(TcbMismatch) as err:
        match_tcb_level([], bytes(16), 0)
    assert err.value.check == "dcap.tcb.no_match"


def _v3_levels(v: DcapVector) -> list[TcbLevel]:
    """Test-side conversion of TCB Info v3 levels into the v2 structure (same semantics)."""
    body, _ = signed_json_value(v.files["tcb_info.json"], "tcbInfo", "tcb_info")
    return [
        TcbLevel(tuple(c["svn"] for c in lvl["tcb"]["sgxtcbcomponents"]), lvl["tcb"]["pcesvn"],
                 lvl["tcbStatus"], lvl["tcbDate"], tuple(lvl.get("advisoryIDs", [])))
        for lvl in json.loads(body)["tcbLevels"]
    ]


@pytest.mark.parametrize("name", ["dcapqvl-sgx-v3", "zkdcap-sgx-v3"])
def test_matching_rules_agree_with_dcap_qvl_on_v3_vectors(name: str) -> None:
    """The same chain, QE and TCB rules applied to the v3 SGX vectors give dcap-qvl's verdict."""
    v = load_dcap("sgx", name)
    want = v.verify()  # dcap-qvl
    q = parse_quote(v.quote)
    root = x509.load_der_x509_certificate(shipped_root_der())
    crls = [x509.load_der_x509_crl(v.files[n]) for n in ("pck_crl.der", "root_ca_crl.der")]
    verify_chain(x509.load_pem_x509_certificates(q.sig.pck_chain_pem()), root, crls,
                 v.verify_at, "pck")
    ext = _pck_ext(v)
    level = match_tcb_level(_v3_levels(v), bytes(ext.cpu_svn), ext.pce_svn)
    qe = check_qe_identity(q.sig.qe_report, _qe_identity(v))
    status, advisories = merge_status((level.status, level.advisory_ids),
                                      (qe.status, qe.advisory_ids))
    assert TcbStatus(status) is want.tcb.status
    assert list(advisories) == list(want.tcb.advisory_ids)


def test_qe_identity_mismatches(v2: DcapVector) -> None:
    qe = parse_quote(v2.quote).sig.qe_report
    ident = _qe_identity(v2)
    cases: list[tuple[QeIdentity, Any, str]] = [
        (dataclasses.replace(ident, mrsigner=bytes(32)), qe, "MRSIGNER"),
        (dataclasses.replace(ident, isv_prod_id=2), qe, "ISVPRODID"),
        (dataclasses.replace(ident, miscselect=1), qe, "MISCSELECT"),
        (dataclasses.replace(ident, attributes=b"\x01" + ident.attributes[1:]), qe, "ATTRIBUTES"),
        (ident, dataclasses.replace(qe, attributes=bytes([qe.attributes[0] | 2])
                                    + qe.attributes[1:]), "debug"),
    ]
    for bad_ident, report, what in cases:
        with pytest.raises(TcbMismatch) as err:
            check_qe_identity(report, bad_ident)
        assert err.value.check == "dcap.qe_identity.mismatch" and what in err.value.message


def test_qe_identity_masks_and_svn_levels(v2: DcapVector) -> None:
    qe = parse_quote(v2.quote).sig.qe_report
    ident = _qe_identity(v2)
    # XFRM (attributes bytes 8..15) is masked out: any value passes.
    assert check_qe_identity(dataclasses.replace(qe, attributes=qe.attributes[:8] + b"\xff" * 8),
                             ident).status == "UpToDate"
    assert check_qe_identity(dataclasses.replace(qe, isv_svn=7), ident).status == "OutOfDate"
    with pytest.raises(TcbMismatch) as err:
        check_qe_identity(dataclasses.replace(qe, isv_svn=0), ident)
    assert (err.value.check, err.value.expected, err.value.actual) == ("dcap.qe.tcb", ">= 1", 0)


def test_status_merge_follows_dcap_qvl() -> None:
    assert merge_status(("OutOfDate", []), ("UpToDate", [])) == ("OutOfDate", ())
    assert merge_status(("SWHardeningNeeded", ["A", "B"]), ("OutOfDate", ["B", "C"])) == (
        "OutOfDate", ("A", "B", "C"))
    for platform, qe in (("Revoked", "UpToDate"), ("UpToDate", "Revoked")):
        with pytest.raises(TcbMismatch) as err:
            merge_status((platform, []), (qe, []))
        assert err.value.check == "dcap.tcb.revoked"


# --- chains and CRLs on a small test PKI (real signatures, our own keys) ------------------------

NOW = dt.datetime(2025, 2, 13, tzinfo=UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])


def _cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          signer: ec.EllipticCurvePrivateKey, *, ca: bool, serial: int) -> x509.Certificate:
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                          decipher_only=False)
    return (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer)
        .public_key(key.public_key()).serial_number(serial)
        .not_valid_before(NOW - dt.timedelta(days=365))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(signer, hashes.SHA256())
    )


def _crl(issuer: x509.Name, signer: ec.EllipticCurvePrivateKey, revoked: tuple[int, ...] = (),
         days: tuple[int, int] = (-1, 30)) -> x509.CertificateRevocationList:
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer)
         .last_update(NOW + dt.timedelta(days=days[0]))
         .next_update(NOW + dt.timedelta(days=days[1])))
    for serial in revoked:
        b = b.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW).build())
    return b.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def pki() -> dict[str, Any]:
    root_key, ca_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _cert("Test Root", root_key, _name("Test Root"), root_key, ca=True, serial=1)
    ca = _cert("Test CA", ca_key, root.subject, root_key, ca=True, serial=2)
    leaf = _cert("Test PCK", leaf_key, ca.subject, ca_key, ca=False, serial=3)
    return {"root": root, "ca": ca, "leaf": leaf, "root_key": root_key, "ca_key": ca_key,
            "leaf_key": leaf_key}


def _crls(p: dict[str, Any], **kw: Any) -> list[x509.CertificateRevocationList]:
    return [_crl(p["ca"].subject, kw.get("ca_signer", p["ca_key"]), kw.get("ca_revoked", ()),
                 kw.get("days", (-1, 30))),
            _crl(p["root"].subject, p["root_key"], kw.get("root_revoked", ()))]


def test_test_pki_chain_verifies(pki: dict[str, Any]) -> None:
    verify_chain([pki["leaf"], pki["ca"], pki["root"]], pki["root"], _crls(pki), NOW, "t")
    verify_chain([pki["leaf"], pki["ca"]], pki["root"], _crls(pki), NOW, "t")  # root implied


@pytest.mark.parametrize(("kw", "check"), [
    ({"ca_revoked": (3,)}, "dcap.pck.revoked"),
    ({"root_revoked": (2,)}, "dcap.pck.revoked"),  # the intermediate
    ({"root_revoked": (1,)}, "dcap.pck.revoked"),  # the trust root itself
    ({"ca_signer": "root_key"}, "dcap.crl.signature"),
    ({"days": (-40, -1)}, "dcap.collateral.expired"),
    ({"days": (1, 30)}, "dcap.collateral.not_yet_valid"),
])
def test_test_pki_revocation(pki: dict[str, Any], kw: dict[str, Any], check: str) -> None:
    if "ca_signer" in kw:
        kw = {"ca_signer": pki[kw["ca_signer"]]}
    with pytest.raises(ChainInvalid) as err:
        verify_chain([pki["leaf"], pki["ca"]], pki["root"], _crls(pki, **kw), NOW, "t")
    assert err.value.check == check


def test_test_pki_structural_failures(pki: dict[str, Any]) -> None:
    crls = _crls(pki)
    with pytest.raises(ChainInvalid) as err:  # no CRL from the intermediate
        verify_chain([pki["leaf"], pki["ca"]], pki["root"], crls[1:], NOW, "t")
    assert err.value.check == "dcap.crl.missing"
    with pytest.raises(ChainInvalid) as err:  # leaf straight under the root: wrong issuer
        verify_chain([pki["leaf"]], pki["root"], crls, NOW, "t")
    assert err.value.check == "dcap.chain.root"
    child_key = ec.generate_private_key(ec.SECP256R1())
    child = _cert("Child", child_key, pki["leaf"].subject, pki["leaf_key"], ca=False, serial=4)
    with pytest.raises(ChainInvalid) as err:  # signed by a non-CA certificate
        verify_chain([child, pki["leaf"], pki["ca"]], pki["root"], crls, NOW, "t")
    assert err.value.check == "dcap.chain.ca"


def _raw_sig(key: ec.EllipticCurvePrivateKey, body: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    r, s = decode_dss_signature(key.sign(body, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _pems(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def test_tcb_info_signed_by_a_pck_leaf_key_is_refused(pki: dict[str, Any]) -> None:
    # Before: any key chaining to the root could sign TCB Info (here the test PKI's PCK leaf).
    from enarx.attestation.dcap.legacy import _check_signed

    body = b'{"version":2}'
    crls = _crls(pki)
    with pytest.raises(ChainInvalid) as err:
        _check_signed(body, _raw_sig(pki["leaf_key"], body), "tcb_info",
                      _pems(pki["leaf"], pki["ca"], pki["root"]), pki["root"], crls, NOW)
    assert err.value.check == "dcap.tcb_info.signer"
    # Named like Intel's signer but issued by the intermediate, not the root: refused too.
    key = ec.generate_private_key(ec.SECP256R1())
    under_ca = _cert("Intel SGX TCB Signing", key, pki["ca"].subject, pki["ca_key"], ca=False,
                     serial=7)
    with pytest.raises(ChainInvalid) as err:
        _check_signed(body, _raw_sig(key, body), "qe_identity",
                      _pems(under_ca, pki["ca"], pki["root"]), pki["root"], crls, NOW)
    assert err.value.check == "dcap.qe_identity.signer"
    # The TCB Signing certificate issued by the root signs: accepted.
    signer = _cert("Intel SGX TCB Signing", key, pki["root"].subject, pki["root_key"],
                   ca=False, serial=8)
    _check_signed(body, _raw_sig(key, body), "tcb_info", _pems(signer, pki["root"]),
                  pki["root"], crls, NOW)


# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "check"), [
    (b'"version":2', b'"version":3', "dcap.tcb_info.version"),
    (b'"tcbType":0', b'"tcbType":1', "dcap.tcb_info.format"),
    (b'"fmspc":"00606a000000"', b'"fmspc":"00606a"', "dcap.tcb_info.format"),
    (b'"issueDate":"2025-02-13T03:29:42Z"', b'"issueDate":"2025-02-13"', "dcap.tcb_info.format"),
    (b'"tcbStatus":"OutOfDate"', b'"tcbStatus":"Fine"', "dcap.tcb_info.format"),
    (b'"sgxtcbcomp16svn":0', b'"sgxtcbcomp16svn":256', "dcap.tcb_info.format"),
    (b'"sgxtcbcomp16svn":0', b'"sgxtcbcomp16svn":true', "dcap.tcb_info.format"),
    (b'"pcesvn":13', b'"pcesvm":13', "dcap.tcb_info.format"),
    (b'{"version":2', b'{"id":"TDX","version":2', "dcap.tcb_info.type"),
])
def test_tcb_info_v2_parse_errors(v2: DcapVector, old: bytes, new: bytes, check: str) -> None:
    body, _ = signed_json_value(v2.files["tcb_info.json"], "tcbInfo", "tcb_info")
    with pytest.raises(AttestationError) as err:
        parse_tcb_info_v2(_edit(body, old, new))
    assert err.value.check == check


# --- fuzzing -----------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids,
                                                              max_size=4),
    max_leaves=12,
)


def _mutate_json(body: bytes, data: st.DataObject) -> bytes:
    """Replace one value somewhere in the document with random JSON (or drop the key)."""
    doc = json.loads(body)
    node: Any = doc
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            return json.dumps(doc).encode()
        k = data.draw(st.sampled_from(keys))
        child = node[k]
        if isinstance(child, dict | list) and child and data.draw(st.booleans()):
            node = child
            continue
        if isinstance(node, dict) and data.draw(st.booleans()):
            del node[k]
        else:
            node[k] = data.draw(_json)
        return json.dumps(doc).encode()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_collateral_json_parses_or_raises_typed_errors(data: st.DataObject) -> None:
    v = load_dcap("sgx", "dcaprs-sgx-v3")
    which = data.draw(st.sampled_from(["tcb_info", "qe_identity"]))
    key = "tcbInfo" if which == "tcb_info" else "enclaveIdentity"
    body, _ = signed_json_value(v.files[f"{which}.json"], key, which)
    mutated = _mutate_json(body, data)
    with contextlib.suppress(MalformedEvidence, TcbMismatch):
        (parse_tcb_info_v2 if which == "tcb_info" else parse_qe_identity)(mutated)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | _json.map(lambda j: json.dumps(j).encode()))
def test_random_bytes_to_the_parsers_raise_typed_errors(data: bytes) -> None:
    for parse in (parse_tcb_info_v2, parse_qe_identity):
        with contextlib.suppress(MalformedEvidence, TcbMismatch):
            parse(data)


_TARGETS = ["quote", "quote-pem", "tcb_info.json", "qe_identity.json", "pck_crl.der",
            "root_ca_crl.der", "tcb_info_issuer_chain.pem"]


# cryptography warns (and still parses) when a mutated name has an out-of-spec attribute
# length; such certificates and CRLs are then rejected by the name and signature checks.
@pytest.mark.filterwarnings("ignore:Attribute's length:UserWarning")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_quote_or_collateral_raise_only_typed_errors(data: st.DataObject) -> None:
    from enarx.attestation.dcap import Collateral

    v = load_dcap("sgx", "dcaprs-sgx-v3")
    target = data.draw(st.sampled_from(_TARGETS))
    blob = bytearray(v.quote if target.startswith("quote") else v.files[target])
    # "quote-pem" aims at the embedded PCK chain, where most of the parsing happens.
    low = v.quote.index(b"-----BEGIN") if target == "quote-pem" else 0
    for _ in range(data.draw(st.integers(1, 8))):
        blob[data.draw(st.integers(low, len(blob) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    quote, files = v.quote, dict(v.files)
    if target.startswith("quote"):
        quote = bytes(blob if target == "quote-pem" else blob[:cut])
    else:
        files[target] = bytes(blob if data.draw(st.booleans()) else blob[:cut])
    try:
        ev = verify_quote(quote, Collateral.from_files(files), at=v.verify_at)
    except AttestationError:
        return
    # Survivors changed only bytes nobody signs (trailing padding, PEM text around the DER,
    # hex case of a signature, the quote's copy of the root...).
    assert ev.report_data == parse_quote(v.quote).report.report_data
    assert ev.tcb.status is TcbStatus.OUT_OF_DATE


# --- structure -------------------------------------------------------------------------------


def _attestation_import_graph() -> dict[str, set[str]]:
    """module -> attestation modules it imports (at any level, lazy imports included)."""
    import ast
    from pathlib import Path

    import enarx.attestation

    base = Path(enarx.attestation.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in base.rglob("*.py"):
        parts = ["enarx", *path.relative_to(base.parent).with_suffix("").parts]
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_attestation_modules_have_no_import_cycles() -> None:
    # legacy.py used to import verify.py's private helpers while verify.py imported legacy.py.
    graph = _attestation_import_graph()
    assert "enarx.attestation.dcap.verify" not in graph["enarx.attestation.dcap.legacy"]
    packages = {m for m in graph if any(o.startswith(m + ".") for o in graph)}

    def visit(node: str, stack: list[str]) -> None:
        assert node not in stack, " -> ".join([*stack, node])
        for dep in graph[node]:
            if dep not in packages:  # a package only re-exports its own submodules
                visit(dep, [*stack, node])

    for module in graph:
        visit(module, [])
