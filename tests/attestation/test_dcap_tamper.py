"""Tampered quotes and collateral are rejected, naming the right check; the quote parser
and verifier never raise anything but our typed errors on random or mutated input."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enarx.attestation.dcap import parse_quote
from enarx.attestation.dcap.quote import HEADER_LEN, SGX_REPORT_LEN
from enarx.errors import (
    AttestationError,
    ChainInvalid,
    MalformedEvidence,
    SignatureInvalid,
)
from tests.attestation.dcap_support import DcapVector, load_dcap

VALID = [("tdx", "dcapqvl-tdx-v4"), ("sgx", "zkdcap-sgx-v3"), ("tdx", "gotdxguest-tdx-v5")]


def _flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    b = bytearray(data)
    b[offset] ^= mask
    return bytes(b)


def _layout(v: DcapVector) -> dict[str, int]:
    q = parse_quote(v.quote)
    body = {"sgx": 384, "td10": 584, "td15": 648}[q.body_type]
    body_start = HEADER_LEN + (6 if q.header.version == 5 else 0)
    sig = body_start + body + 4
    qe_report = sig + 128 + (6 if q.header.version >= 4 else 0)
    return {"body": body_start, "body_len": body, "sig": sig, "qe_report": qe_report,
            "qe_sig": qe_report + 384, "end": len(q.raw)}


@pytest.fixture(params=VALID, ids=[n for _, n in VALID])
def vec(request: pytest.FixtureRequest) -> DcapVector:
    kind, name = request.param
    return load_dcap(kind, name)


def test_flipped_version_byte(vec: DcapVector) -> None:
    with pytest.raises(MalformedEvidence) as err:
        vec.verify(_flip(vec.quote, 0, 0x02))
    assert err.value.check == "dcap.quote.format" and "version" in err.value.message


@pytest.mark.parametrize("where", ["sig", "sig+32", "sig+64"])
def test_flipped_quote_signature_or_attestation_key(vec: DcapVector, where: str) -> None:
    base, _, extra = where.partition("+")
    off = _layout(vec)[base] + int(extra or 0)
    with pytest.raises(SignatureInvalid) as err:
        vec.verify(_flip(vec.quote, off))
    # A changed attestation key also breaks the QE's binding of it; either names the quote.
    assert err.value.check in ("dcap.quote.signature", "dcap.qe_report.hash")


@pytest.mark.parametrize("field", [0, 100, "report_data"])
def test_flipped_report_body(vec: DcapVector, field: int | str) -> None:
    lay = _layout(vec)
    off = lay["body"] + (lay["body_len"] - 1 if field == "report_data" else int(field))
    with pytest.raises(SignatureInvalid) as err:
        vec.verify(_flip(vec.quote, off))
    assert err.value.check == "dcap.quote.signature"


@pytest.mark.parametrize("part", ["qe_report", "qe_sig"])
def test_flipped_qe_report_or_its_signature(vec: DcapVector, part: str) -> None:
    off = _layout(vec)[part] + 40
    with pytest.raises(SignatureInvalid) as err:
        vec.verify(_flip(vec.quote, off))
    assert err.value.check == "dcap.qe_report.signature"


def _replace_pck_leaf_der(quote: bytes, mutate: int) -> bytes:
    """Flip one byte of the PCK leaf's DER signature value, keeping the PEM the same size."""
    start = quote.index(b"-----BEGIN CERTIFICATE-----")
    end = quote.index(b"-----END CERTIFICATE-----", start)
    body = quote[start + 27 : end]
    der = bytearray(base64.b64decode(b"".join(body.split())))
    der[len(der) - mutate] ^= 0x01
    b64 = base64.b64encode(bytes(der))
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    new_body = b"\n" + b"\n".join(lines) + b"\n"
    assert len(new_body) == len(body), "PEM line layout differs; adjust the helper"
    return quote[: start + 27] + new_body + quote[end:]


def test_flipped_pck_certificate_bytes(vec: DcapVector) -> None:
    with pytest.raises(ChainInvalid) as err:
        vec.verify(_replace_pck_leaf_der(vec.quote, 5))
    assert err.value.check == "dcap.chain.signature"


@pytest.mark.parametrize("cut", [0, 1, HEADER_LEN - 1, HEADER_LEN + 10, 700, "minus1"])
def test_truncated_quote(vec: DcapVector, cut: int | str) -> None:
    n = _layout(vec)["end"] - 1 if cut == "minus1" else int(cut)
    with pytest.raises(MalformedEvidence) as err:
        vec.verify(vec.quote[:n])
    assert err.value.check == "dcap.quote.format"


def test_trailing_bytes_are_ignored(vec: DcapVector) -> None:
    end = _layout(vec)["end"]
    a = vec.verify(vec.quote[:end])
    b = vec.verify(vec.quote[:end] + b"appended junk \x00\xff" * 10)
    assert a.report_data == b.report_data and a.tcb == b.tcb


def test_tampered_tcb_info_body_breaks_its_signature(vec: DcapVector) -> None:
    doc = vec.files["tcb_info.json"]
    key = b'"tcbEvaluationDataNumber":'
    i = doc.index(key) + len(key)
    tampered = doc[:i] + (b"9" if doc[i : i + 1] != b"9" else b"8") + doc[i + 1 :]
    with pytest.raises(SignatureInvalid) as err:
        vec.verify(collateral=vec.collateral(tcb_info=tampered))
    assert err.value.check == "dcap.tcb_info.signature"


def test_reserialised_tcb_info_breaks_its_signature(vec: DcapVector) -> None:
    """The signature covers the served bytes; re-serialising (even losslessly) breaks it."""
    doc = json.loads(vec.files["tcb_info.json"])
    pretty = json.dumps(doc, indent=1).encode()
    with pytest.raises(SignatureInvalid) as err:
        vec.verify(collateral=vec.collateral(tcb_info=pretty))
    assert err.value.check == "dcap.tcb_info.signature"


def test_tampered_qe_identity_signature(vec: DcapVector) -> None:
    doc = json.loads(vec.files["qe_identity.json"])
    raw = vec.files["qe_identity.json"]
    sig = doc["signature"]
    bad = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
    with pytest.raises(SignatureInvalid) as err:
        vec.verify(collateral=vec.collateral(qe_identity=raw.replace(sig.encode(), bad.encode())))
    assert err.value.check == "dcap.qe_identity.signature"


def _self_signed() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Intel SGX Root CA")])
    now = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=20000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_collateral_chain_with_a_foreign_root_is_rejected(vec: DcapVector) -> None:
    chain = vec.files["tcb_info_issuer_chain.pem"]
    leaf = chain[: chain.index(b"-----END CERTIFICATE-----") + 26]
    with pytest.raises(ChainInvalid) as err:
        vec.verify(collateral=vec.collateral(tcb_info_issuer_chain=leaf + _self_signed()))
    assert err.value.check == "dcap.chain.root"


def test_explicit_other_trust_root_rejects_intel_evidence(vec: DcapVector) -> None:
    with pytest.raises(ChainInvalid) as err:
        vec.verify(trust_root=_self_signed())
    assert err.value.check == "dcap.chain.root"


def test_missing_collateral_file_is_named(vec: DcapVector) -> None:
    from enarx.attestation.dcap import Collateral

    files = dict(vec.files)
    del files["qe_identity.json"]
    with pytest.raises(MalformedEvidence) as err:
        Collateral.from_files(files)
    assert err.value.check == "dcap.collateral.missing" and "qe_identity.json" in err.value.message


@pytest.mark.parametrize("bad", [b"", b"not json", b"[]", b'{"tcbInfo": {}}',
                                 b'{"tcbInfo": {}, "signature": "zz"}'])
def test_malformed_tcb_info_documents(vec: DcapVector, bad: bytes) -> None:
    with pytest.raises(MalformedEvidence) as err:
        vec.verify(collateral=vec.collateral(tcb_info=bad))
    assert err.value.check.startswith("dcap.")


# --- the embedded root, the collateral signer and malformed names -----------------------------

# Every vector of both paths: dcap-qvl (VALID) and TCB Info v2 (dcaprs-sgx-v3, legacy.py).
BOTH = [*VALID, ("sgx", "dcaprs-sgx-v3")]
_BOTH_IDS = [n for _, n in BOTH]


def _pem(der: bytes) -> bytes:
    return (b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der)
            + b"-----END CERTIFICATE-----\n")


def _edit_chain(pem: bytes, index: int, edit: object) -> bytes:
    """``pem`` with certificate ``index`` re-encoded after ``edit(bytearray DER)``; the PEM
    keeps its length when the DER does (so a quote's size fields stay right)."""
    certs = x509.load_pem_x509_certificates(pem)
    out = []
    for i, c in enumerate(certs):
        der = bytearray(c.public_bytes(serialization.Encoding.DER))
        if i == index % len(certs):
            edit(der)  # type: ignore[operator]
        out.append(_pem(bytes(der)))
    return b"".join(out)


def _rename_root(der: bytearray) -> None:
    """Root CA -> Root CB in the subject only (the issuer keeps the real name)."""
    at = der.rfind(b"Intel SGX Root CA")
    der[at + 16] = ord("B")


def _bad_utf8_name(der: bytearray) -> None:
    """An invalid UTF-8 byte in the first name (issuer): it still loads, and fails only when
    cryptography decodes the name lazily."""
    at = der.find(b"Intel Corporation")
    der[at - 2] = 0x0C  # UTF8String
    der[at] = 0xFF


def _quote_with_chain(v: DcapVector, edit: object, index: int = -1) -> bytes:
    pem = parse_quote(v.quote).sig.pck_chain_pem()
    new = _edit_chain(pem, index, edit)
    new = new + b"\n" * (len(pem) - len(new))  # base64 line breaks may differ by a byte
    assert len(new) == len(pem)
    return v.quote.replace(pem, new)


@pytest.mark.parametrize(("kind", "name"), BOTH, ids=_BOTH_IDS)
def test_forged_root_embedded_in_the_quote_is_rejected(kind: str, name: str) -> None:
    # dcap-qvl anchors on the trust root and ignores the quote's copy: a copy with another
    # name verified, and --json listed it in `chain` as if it had been checked.
    v = load_dcap(kind, name)
    with pytest.raises(ChainInvalid) as err:
        v.verify(_quote_with_chain(v, _rename_root))
    assert err.value.check in ("dcap.chain.root", "dcap.chain.signature")
    assert "Root CB" in str(err.value.actual) + str(err.value.expected)


@pytest.mark.parametrize(("kind", "name"), BOTH, ids=_BOTH_IDS)
def test_reported_chain_is_the_verified_path_ending_in_the_trust_root(kind: str,
                                                                     name: str) -> None:
    import hashlib

    from enarx.attestation.roots import intel_sgx_root

    root = x509.load_pem_x509_certificate(intel_sgx_root())
    ev = load_dcap(kind, name).verify()
    assert len(ev.chain) == 3 and "PCK Certificate" in ev.chain[0].subject
    der = root.public_bytes(serialization.Encoding.DER)
    assert ev.chain[-1].sha256 == hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize(("kind", "name"), BOTH, ids=_BOTH_IDS)
@pytest.mark.parametrize("field", ["tcb_info", "qe_identity"])
def test_collateral_signed_by_a_pck_key_is_not_intels_tcb_signer(kind: str, name: str,
                                                                 field: str) -> None:
    # The quote's own PCK chain chains to the Intel root too; only Intel's TCB Signing
    # certificate (issued by the root) may sign TCB Info and QE Identity.
    v = load_dcap(kind, name)
    pck_chain = parse_quote(v.quote).sig.pck_chain_pem()
    with pytest.raises(ChainInvalid) as err:
        v.verify(collateral=v.collateral(**{f"{field}_issuer_chain": pck_chain}))
    assert err.value.check == f"dcap.{field}.signer"
    assert "PCK" in str(err.value.actual)


@pytest.mark.parametrize(("kind", "name"), BOTH, ids=_BOTH_IDS)
@pytest.mark.parametrize("where", ["tcb_info_issuer_chain", "qe_identity_issuer_chain",
                                   "quote root", "quote leaf"])
def test_malformed_names_are_typed_errors(kind: str, name: str, where: str) -> None:
    v = load_dcap(kind, name)
    if where.startswith("quote"):
        quote = _quote_with_chain(v, _bad_utf8_name, -1 if where == "quote root" else 0)
        call = lambda: v.verify(quote)  # noqa: E731
    else:
        for index in (0, -1):
            bad = _edit_chain(v.files[f"{where}.pem"], index, _bad_utf8_name)
            with pytest.raises(AttestationError) as err:
                v.verify(collateral=v.collateral(**{where: bad}))
            assert err.value.exit_code == 4
        return
    with pytest.raises(AttestationError) as err:
        call()
    assert err.value.exit_code == 4


@pytest.mark.parametrize(("kind", "name"), BOTH, ids=_BOTH_IDS)
@pytest.mark.parametrize(("field", "key"), [("tcb_info", "tcbInfo"),
                                            ("qe_identity", "enclaveIdentity")])
def test_deeply_nested_collateral_json_is_malformed(kind: str, name: str, field: str,
                                                   key: str) -> None:
    v = load_dcap(kind, name)
    deep = b'{"%s": ' % key.encode() + b"[" * 100_000 + b"]" * 100_000 + b', "signature": ""}'
    with pytest.raises(MalformedEvidence) as err:
        v.verify(collateral=v.collateral(**{field: deep}))
    assert err.value.check == f"dcap.collateral.{field}" and "nested" in err.value.message


def test_trust_root_with_an_invalid_version_is_a_typed_error() -> None:
    from enarx.attestation.roots import intel_sgx_root

    der = bytearray(x509.load_pem_x509_certificate(intel_sgx_root())
                    .public_bytes(serialization.Encoding.DER))
    at = der.find(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT INTEGER 2 (v3)
    der[at + 4] = 7
    with pytest.raises(ChainInvalid) as err:
        load_dcap("sgx", "zkdcap-sgx-v3").verify(trust_root=bytes(der))
    assert err.value.check == "dcap.trust_root"


# --- the TCB reported must come from the verified PCK certificate ---------------------------

SGX_EXT = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
# DER prefix of the OIDs 1.2.840.113741.1.13.1.2.<n> (TCB components, PCESVN, CPUSVN).
_TCB_OID_PREFIX = bytes.fromhex("060B2A864886F84D010D0102")


def _raised_tcb_extension(leaf: x509.Certificate) -> bytes:
    """The leaf's Intel SGX extension with every TCB SVN raised to at least 127, in place."""
    value = bytearray(leaf.extensions.get_extension_for_oid(SGX_EXT).value.value)  # type: ignore[attr-defined]
    i = 0
    while (i := value.find(_TCB_OID_PREFIX, i)) != -1:
        j = i + len(_TCB_OID_PREFIX) + 1  # skip the last arc byte
        if value[j] == 0x02 and value[j + 1] == 1 and value[j + 2] < 0x7F:  # 1-byte INTEGER
            value[j + 2] = 0x7F
        if value[j] == 0x04 and value[j + 1] == 16:  # CPUSVN OCTET STRING
            for k in range(j + 2, j + 18):
                value[k] = max(value[k], 0x7F)
        i = j
    return bytes(value)


def _self_made_pck(extension: bytes) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(5)
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=9000))
            .add_extension(x509.UnrecognizedExtension(SGX_EXT, extension), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def _with_cert_data(quote: bytes, cert_data: bytes) -> bytes:
    """A v3 quote with its certification data (PCK chain) replaced; nothing signed changes."""
    parsed = parse_quote(quote)
    body_end = HEADER_LEN + SGX_REPORT_LEN
    sig = parsed.raw[body_end + 4:]
    auth_len = struct.unpack_from("<H", sig, 64 + 64 + 384 + 64)[0]
    cd_at = 64 + 64 + 384 + 64 + 2 + auth_len
    cert_type = struct.unpack_from("<H", sig, cd_at)[0]
    new_sig = sig[:cd_at] + struct.pack("<HI", cert_type, len(cert_data)) + cert_data
    return parsed.raw[:body_end] + struct.pack("<I", len(new_sig)) + new_sig


def _smuggled_quote(name: str) -> bytes:
    """The vector's quote with a self-made 'PCK' (better TCB) in a non-CERTIFICATE PEM block
    ahead of the genuine chain."""
    v = load_dcap("sgx", name)
    parsed = parse_quote(v.quote)
    leaf = x509.load_pem_x509_certificates(parsed.sig.pck_chain_pem())[0]
    fake = _self_made_pck(_raised_tcb_extension(leaf))
    block = b"-----BEGIN JUNK-----\n" + base64.encodebytes(fake) + b"-----END JUNK-----\n"
    return _with_cert_data(v.quote, block + parsed.sig.cert_data)


def test_tcb_info_v2_path_cannot_be_fed_a_better_tcb_from_an_unverified_pem_block() -> None:
    # dcaprs-sgx-v3 is OutOfDate. The forged block carries higher SVNs; if the TCB level were
    # matched against it, the quote would come out with a better status.
    v = load_dcap("sgx", "dcaprs-sgx-v3")
    quote = _smuggled_quote("dcaprs-sgx-v3")
    with pytest.raises(MalformedEvidence) as err:
        v.verify(quote)
    assert err.value.check == "dcap.chain.format"
    assert err.value.expected is not None and err.value.actual is not None


def test_dcap_qvl_path_rejects_the_same_smuggled_block() -> None:
    v = load_dcap("sgx", "dcapqvl-sgx-v3")
    quote = _smuggled_quote("dcapqvl-sgx-v3")
    with pytest.raises(AttestationError):
        v.verify(quote)


@pytest.mark.parametrize("name", ["dcaprs-sgx-v3", "dcapqvl-sgx-v3"])
def test_reported_tcb_is_the_verified_pck_certificates(name: str) -> None:
    # The genuine quote: Tcb.reported (what min_tcb policies judge) equals the SVNs in the
    # PCK leaf that the chain check verified, decoded here independently of enarx.
    v = load_dcap("sgx", name)
    leaf = x509.load_pem_x509_certificates(parse_quote(v.quote).sig.pck_chain_pem())[0]
    ext = leaf.extensions.get_extension_for_oid(SGX_EXT).value.value  # type: ignore[attr-defined]
    at = ext.find(_TCB_OID_PREFIX + b"\x12")  # CPUSVN, arc 18
    assert ext[at + 13] == 0x04 and ext[at + 14] == 16
    cpu_svn = list(ext[at + 15 : at + 31])
    ev = v.verify()
    assert [ev.tcb.reported[f"sgx_comp{i:02d}"] for i in range(1, 17)] == cpu_svn


def test_far_time_is_a_typed_error_not_an_overflow() -> None:
    v = load_dcap("sgx", "dcapqvl-sgx-v3")
    east = dt.timezone(dt.timedelta(hours=1))
    with pytest.raises(MalformedEvidence) as err:
        v.verify(at=dt.datetime.min.replace(tzinfo=east))
    assert err.value.check == "dcap.time"


# --- fuzzing ---------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=6000))
def test_parser_on_random_bytes_raises_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(MalformedEvidence):
        parse_quote(data)


_FUZZ = load_dcap


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_real_quotes_raise_only_typed_errors(data: st.DataObject) -> None:
    kind, name = data.draw(st.sampled_from(VALID))
    v = _FUZZ(kind, name)
    q = bytearray(v.quote)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(q) - 1))
        q[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(q)))
    try:
        ev = v.verify(bytes(q[:cut]))
    except AttestationError:
        return
    # Survivors changed only bytes nobody signs (trailing padding, PEM whitespace...).
    assert ev.report_data == parse_quote(v.quote).report.report_data


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID), st.binary(max_size=5000))
def test_parser_on_real_header_plus_random_tail(vector: tuple[str, str], tail: bytes) -> None:
    header = load_dcap(*vector).quote[:HEADER_LEN + 6]
    try:
        q = parse_quote(header + tail)
    except MalformedEvidence:
        return
    assert len(q.raw) <= len(header) + len(tail)
