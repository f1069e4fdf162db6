"""steward.extensions: the exact encodings, round trips, and typed errors on malformed input."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json

import cbor2
import pytest
from asn1crypto import core as asn1core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx.errors import MalformedEvidence, UsageError
from enarx.steward.ca import StewardCA
from enarx.steward.extensions import (
    MEDIA_TYPES,
    OID_CMW,
    OID_RATLS_EVIDENCE,
    OID_UPSTREAM_KVM,
    OID_UPSTREAM_SGX,
    OID_UPSTREAM_SNP,
    OID_WORKLOAD,
    CmwEvidence,
    cmw_extension,
    decode_cmw,
    decode_ratls,
    decode_workload,
    encode_cmw,
    encode_ratls,
    encode_workload,
    find_cmw,
    find_workload,
    ratls_extension,
)

WORKLOAD = "sha384:" + "0123456789abcdef" * 6
EVIDENCE = CmwEvidence("snp", b"\x02" * 1184, (b"vcek-der", b"ask-der"),
                       b'{"nonce":"bm9uY2U=","tee-pubkey":{}}')


def test_oids() -> None:
    assert OID_CMW.dotted_string == "1.3.6.1.5.5.7.1.35"
    assert OID_RATLS_EVIDENCE.dotted_string == "2.23.133.5.4.9"
    assert OID_WORKLOAD.dotted_string == "1.3.6.1.4.1.58270.2.1"
    assert [o.dotted_string for o in (OID_UPSTREAM_KVM, OID_UPSTREAM_SGX, OID_UPSTREAM_SNP)] == [
        "1.3.6.1.4.1.58270.1.1", "1.3.6.1.4.1.58270.1.2", "1.3.6.1.4.1.58270.1.3"]


def test_cmw_exact_encoding() -> None:
    value = encode_cmw(EVIDENCE)
    # cbor CHOICE = OCTET STRING (long form length) holding the CBOR record.
    assert value[0] == 0x04
    body = value[4:] if value[1] == 0x82 else value[3:]
    assert int.from_bytes(value[2:4], "big") == len(body)
    record = cbor2.loads(body)
    assert record[0] == "application/vnd.enarx.snp-evidence+cbor"
    assert record[2] == 4
    assert cbor2.loads(record[1]) == {"report": EVIDENCE.report,
                                      "certs": [b"vcek-der", b"ask-der"],
                                      "runtime-data": EVIDENCE.runtime_data}
    assert decode_cmw(value) == EVIDENCE
    assert EVIDENCE.runtime_claims()["nonce"] == "bm9uY2U="
    # An independent DER reader agrees: one OCTET STRING, nothing around it.
    assert asn1core.OctetString.load(value, strict=True).native == body


@pytest.mark.parametrize("platform", sorted(MEDIA_TYPES))
def test_cmw_round_trip_in_a_certificate(platform: str) -> None:
    ca = StewardCA.create()
    ev = CmwEvidence(platform, b"quote" * 200, (), b"{}")
    cert = ca.issue(ec.generate_private_key(ec.SECP256R1()).public_key(), [],
                    dt.timedelta(hours=1), [cmw_extension(ev)])
    again = x509.load_der_x509_certificate(cert.public_bytes(serialization.Encoding.DER))
    assert find_cmw(again) == ev
    assert find_workload(again) == (False, None)


def test_cmw_json_choice_is_read_too() -> None:
    inner = cbor2.dumps({"report": b"r", "certs": [], "runtime-data": b"{}"})
    record = json.dumps([MEDIA_TYPES["tdx"],
                         base64.urlsafe_b64encode(inner).decode().rstrip("="), 4]).encode()
    value = bytes([0x0C, len(record)]) + record
    assert decode_cmw(value) == CmwEvidence("tdx", b"r", (), b"{}")


def _octets(body: bytes) -> bytes:
    n = len(body)
    length = bytes([n]) if n < 0x80 else bytes([0x82]) + n.to_bytes(2, "big")
    return b"\x04" + length + body


def _utf8(text: str) -> bytes:
    body = text.encode()
    n = len(body)
    length = bytes([n]) if n < 0x80 else bytes([0x82]) + n.to_bytes(2, "big")
    return b"\x0c" + length + body


def _record(*items: object) -> bytes:
    return _octets(cbor2.dumps(list(items)))


@pytest.mark.parametrize(("value", "fragment"), [
    (b"", "truncated"),
    (b"\x04\x05abc", "does not match"),
    (b"\x04\x81\x03abc", "non-minimal"),
    (b"\x30\x00", "unexpected DER tag"),
    (b"\x04\x02\xff\xff", "invalid CBOR"),
    (_record("text/plain", b"x", 4), "unsupported CMW media type"),
    (_record(MEDIA_TYPES["snp"], b"\xa0", 8), "indicator"),
    (_record(MEDIA_TYPES["snp"], "not bytes", 4), "not a byte string"),
    (_record(MEDIA_TYPES["snp"], cbor2.dumps([1]), 4), "not a CBOR map"),
    (_record(MEDIA_TYPES["snp"], cbor2.dumps({"certs": []}), 4), "no 'report'"),
    (_record(MEDIA_TYPES["snp"], cbor2.dumps({"report": b"r", "certs": [1]}), 4), "'certs'"),
    (_record(MEDIA_TYPES["snp"], cbor2.dumps({"report": b"r", "runtime-data": "x"}), 4),
     "'runtime-data'"),
    (_record(MEDIA_TYPES["snp"]), "not a CMW record"),
])
def test_cmw_malformed(value: bytes, fragment: str) -> None:
    with pytest.raises(MalformedEvidence, match=fragment) as e:
        decode_cmw(value)
    assert e.value.check == "cert.cmw" and e.value.exit_code == 4 and e.value.hint


def test_runtime_claims_must_be_a_json_object() -> None:
    for raw in (b"[1]", b"\xff", b"{"):
        with pytest.raises(MalformedEvidence):
            CmwEvidence("snp", b"r", (), raw).runtime_claims()


def test_workload_exact_encoding() -> None:
    assert encode_workload(WORKLOAD) == b"\x0c\x67" + WORKLOAD.encode()
    assert encode_workload(None) == b"\x0c\x07unbound"
    assert asn1core.UTF8String.load(encode_workload(WORKLOAD), strict=True).native == WORKLOAD
    assert decode_workload(encode_workload(WORKLOAD)) == WORKLOAD
    assert decode_workload(encode_workload(None)) is None
    with pytest.raises(UsageError):
        encode_workload("sha384:nothex")


@pytest.mark.parametrize("value", [
    b"", b"\x0c", b"\x04\x07unbound", b"\x0c\x03abc", b"\x0c\x02\xff\xfe",
    b"\x0c\x07Unbound", b"\x0c\x08unbound!",
])
def test_workload_malformed(value: bytes) -> None:
    with pytest.raises(MalformedEvidence) as e:
        decode_workload(value)
    assert e.value.check == "cert.workload"


def test_ratls_exact_encoding_and_binding() -> None:
    spki = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    value = encode_ratls(b"Q" * 600, spki, nonce=b"n" * 32)
    item = cbor2.loads(value)
    assert item.tag == 60000 and item.value[0] == b"Q" * 600
    claims = cbor2.loads(item.value[1])
    assert cbor2.loads(claims["pubkey-hash"]) == [7, hashlib.sha384(spki).digest()]
    assert claims["nonce"] == b"n" * 32
    ev = decode_ratls(value)
    assert ev.quote == b"Q" * 600 and ev.hash_alg == "sha384" and ev.nonce == b"n" * 32
    assert ev.claims_buffer == item.value[1]
    assert ev.binds(spki) and not ev.binds(spki + b"x")
    ext = ratls_extension(b"Q", spki)
    assert ext.oid == OID_RATLS_EVIDENCE and not ext.critical
    assert decode_ratls(encode_ratls(b"Q", spki, hash_alg="sha256")).hash_alg == "sha256"


@pytest.mark.parametrize("value", [
    b"", cbor2.dumps([b"q", b"c"]), cbor2.dumps(cbor2.CBORTag(60001, [b"q", b"c"])),
    cbor2.dumps(cbor2.CBORTag(60000, [b"q"])),
    cbor2.dumps(cbor2.CBORTag(60000, [b"q", b"\xff"])),
    cbor2.dumps(cbor2.CBORTag(60000, [b"q", cbor2.dumps({"nonce": b""})])),
    cbor2.dumps(cbor2.CBORTag(60000, [b"q", cbor2.dumps(
        {"pubkey-hash": cbor2.dumps([2, b"x" * 32])})])),
    cbor2.dumps(cbor2.CBORTag(60000, [b"q", cbor2.dumps(
        {"pubkey-hash": cbor2.dumps([7, b"x" * 32])})])),
    cbor2.dumps(cbor2.CBORTag(60000, [b"q", cbor2.dumps(
        {"pubkey-hash": cbor2.dumps([1, b"x" * 32]), "nonce": 5})])),
])
def test_ratls_malformed(value: bytes) -> None:
    with pytest.raises(MalformedEvidence) as e:
        decode_ratls(value)
    assert e.value.check == "cert.ratls"


def test_oversized_extension_is_refused_unread() -> None:
    with pytest.raises(MalformedEvidence, match="too large"):
        decode_cmw(b"\x04" + b"\x00" * (2 << 20))


# --- fuzz: malformed input -> MalformedEvidence, never anything else -----------------------

cbor_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.binary(max_size=40),
                      st.text(max_size=40), st.floats(allow_nan=False))
cbor_items = st.recursive(cbor_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(_octets),
    cbor_items.map(lambda v: _octets(cbor2.dumps(v))),
    st.tuples(st.integers(0, 1 << 16), cbor_items).map(
        lambda t: _octets(cbor2.dumps([MEDIA_TYPES["snp"], cbor2.dumps(cbor2.CBORTag(*t)), 4]))),
    st.tuples(st.sampled_from([*MEDIA_TYPES.values(), "x"]), st.text(max_size=60),
              st.one_of(st.integers(), st.text(max_size=4), st.none())).map(
        lambda t: _utf8(json.dumps([t[0], t[1], t[2]]))),
    st.text(max_size=100).map(_utf8),
    st.tuples(st.sampled_from([*MEDIA_TYPES.values(), "x"]), cbor_items, cbor_items).map(
        lambda t: _octets(cbor2.dumps([t[0], cbor2.dumps(t[1]), t[2]]))),
))
def test_fuzz_decode_cmw(value: bytes) -> None:
    try:
        ev = decode_cmw(value)
    except MalformedEvidence:
        return
    assert ev.platform in MEDIA_TYPES and isinstance(ev.report, bytes)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    cbor_items.map(cbor2.dumps),
    st.tuples(cbor_items, cbor_items).map(
        lambda t: cbor2.dumps(cbor2.CBORTag(60000, [b"q", cbor2.dumps(
            {"pubkey-hash": cbor2.dumps(t[0]), "nonce": t[1]})]))),
))
def test_fuzz_decode_ratls(value: bytes) -> None:
    with contextlib.suppress(MalformedEvidence):
        decode_ratls(value)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=120),
                 st.text(max_size=110).map(lambda t: b"\x0c" + bytes([len(t.encode()) % 128])
                                           + t.encode())))
def test_fuzz_decode_workload(value: bytes) -> None:
    with contextlib.suppress(MalformedEvidence):
        decode_workload(value)


def _duplicated(target: x509.ObjectIdentifier) -> x509.Certificate:
    """A certificate with two extensions under one OID (the CA's builder refuses that, so a
    same-length placeholder OID is rewritten in the DER; the signature no longer matters)."""
    ca = StewardCA.create()
    placeholder = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.36")
    other = x509.ObjectIdentifier("1.3.6.1.4.1.58270.2.9")
    cert = ca.issue(ec.generate_private_key(ec.SECP256R1()).public_key(), [],
                    dt.timedelta(hours=1), [
                        cmw_extension(EVIDENCE),
                        x509.Extension(placeholder, False,
                                       x509.UnrecognizedExtension(placeholder, b"\x04\x00")),
                        x509.Extension(OID_WORKLOAD, False, x509.UnrecognizedExtension(
                            OID_WORKLOAD, encode_workload(WORKLOAD))),
                        x509.Extension(other, False, x509.UnrecognizedExtension(
                            other, encode_workload(None))),
                    ])
    der = cert.public_bytes(serialization.Encoding.DER)
    src = _oid_der(placeholder if target == OID_CMW else other)
    assert der.count(src) == 1
    return x509.load_der_x509_certificate(der.replace(src, _oid_der(target)))


def _oid_der(oid: x509.ObjectIdentifier) -> bytes:
    parts = [int(p) for p in oid.dotted_string.split(".")]
    body = bytes([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.insert(0, 0x80 | (p & 0x7F))
            p >>= 7
        body += bytes(chunk)
    return bytes([0x06, len(body)]) + body


def test_duplicate_extensions_are_refused_not_crashing() -> None:
    # Two id-pe-cmw (or two workload) extensions would let two readers see two values.
    with pytest.raises(MalformedEvidence) as e:
        find_cmw(_duplicated(OID_CMW))
    assert e.value.check == "cert.cmw"
    with pytest.raises(MalformedEvidence) as e:
        find_workload(_duplicated(OID_WORKLOAD))
    assert e.value.check == "cert.workload"
