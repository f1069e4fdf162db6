"""Tampered quotes and collateral are rejected, naming the right check; the quote parser
and verifier never raise anything but our typed errors on random or mutated input."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from dcap_support import DcapVector, load_dcap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enarx.attestation.dcap import parse_quote
from enarx.attestation.dcap.quote import HEADER_LEN
from enarx.errors import (
    AttestationError,
    ChainInvalid,
    MalformedEvidence,
    SignatureInvalid,
)

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
