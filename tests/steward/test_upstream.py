"""Upstream Enarx CSRs (steward/upstream.py) with upstream's own fixtures (SOURCE.md there)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from enarx.errors import AttestationError, ChainInvalid, ProtocolError
from enarx.steward.policy import StewardPolicy, appraise
from enarx.steward.upstream import (
    OID_KVM,
    OID_SGX,
    OID_SNP,
    expected_report_data_upstream,
    parse_upstream_bundle,
    parse_upstream_csr,
    verify_upstream,
)

DATA = Path(__file__).parent.parent / "data" / "steward" / "upstream"
MILAN = DATA / "milan.signed.crl.csr"
I5 = DATA / "icelake.signed.tcb.crl.single.i5.csr"
XEON = DATA / "icelake.signed.tcb.crl.multi.xeon.csr"
# Inside the VCEK's validity and the Milan CRL's window (see SOURCE.md).
CAPTURED = dt.datetime(2022, 12, 23, 12, tzinfo=dt.UTC)
MILAN_HASH = ("ff717ae719840c93c1fca3b7db96488454c3c21b43531488eecff51cfed3febc"
              "d91da8be87a4cbcbc52a3bae770987c3")


def _csr(oid: str | None, value: bytes = b"", *, curve: ec.EllipticCurve | None = None,
         critical: bool = False, extra: list[x509.ExtensionType] | None = None) -> bytes:
    key = ec.generate_private_key(curve or ec.SECP384R1())
    b = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if oid is not None:
        b = b.add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value),
                            critical=critical)
    for e in extra or []:
        b = b.add_extension(e, critical=False)
    return b.sign(key, hashes.SHA384()).public_bytes(Encoding.DER)


def _ext_value(der: bytes) -> bytes:
    csr = x509.load_der_x509_csr(der)
    for ext in csr.extensions:
        if isinstance(ext.value, x509.UnrecognizedExtension):
            return ext.value.value
    raise AssertionError("no evidence extension")


# --- parsing ---------------------------------------------------------------------------------


def test_milan_csr_decodes_to_report_vcek_and_crls() -> None:
    csr = parse_upstream_csr(MILAN.read_bytes())
    assert csr.kind == "snp"
    assert len(csr.report) == 1184
    vcek = csr.certs[0]
    assert b"SEV-VCEK" in vcek
    assert [u for u, _ in csr.crls] == ["https://kdsintf.amd.com/vcek/v1/Genoa/crl",
                                        "https://kdsintf.amd.com/vcek/v1/Milan/crl"]
    for _, der in csr.crls:
        x509.load_der_x509_crl(der)
    # The key's SPKI hash is what upstream's Keep put in REPORT_DATA.
    spki = csr.public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert csr.spki_der == spki
    assert csr.report[0x50:0x50 + 48] == hashlib.sha384(spki).digest()


@pytest.mark.parametrize("path", [I5, XEON], ids=["i5", "xeon"])
def test_icelake_csrs_decode_to_quote_tcb_info_chain_and_crls(path: Path) -> None:
    csr = parse_upstream_csr(path.read_bytes())
    assert csr.kind == "sgx"
    assert csr.report[:2] == b"\x03\x00"  # quote v3
    info = json.loads(csr.tcb_info)
    assert info["tcbInfo"]["id"] == "SGX" and info["tcbInfo"]["version"] == 3
    subjects = [x509.load_der_x509_certificate(c).subject.rfc4514_string() for c in csr.certs]
    assert any("TCB Signing" in s for s in subjects) and any("Root CA" in s for s in subjects)
    urls = [u for u, _ in csr.crls]
    assert any("IntelSGXRootCA" in u for u in urls)
    assert any("ca=processor" in u for u in urls) and any("ca=platform" in u for u in urls)
    assert csr.report[0x170:0x170 + 32] == hashlib.sha256(csr.spki_der).digest()


def test_expected_report_data_is_the_padded_spki_hash() -> None:
    spki = b"\x30\x03\x02\x01\x00"
    assert expected_report_data_upstream(spki, "snp") == hashlib.sha384(spki).digest() + bytes(16)
    assert expected_report_data_upstream(spki, "sgx") == hashlib.sha256(spki).digest() + bytes(32)
    with pytest.raises(ValueError):
        expected_report_data_upstream(spki, "kvm")


def test_kvm_csr_has_no_evidence() -> None:
    csr = parse_upstream_csr(_csr(OID_KVM))
    assert csr.kind == "kvm" and csr.report == b""
    assert verify_upstream(csr) is None


@pytest.mark.parametrize(
    ("build", "needle"),
    [
        (lambda: _csr(OID_KVM, b"\x05\x00"), "must be empty"),
        (lambda: _csr(OID_KVM, critical=True), "must not be critical"),
        (lambda: _csr("1.3.6.1.4.1.58270.1.9"), "not supported"),
        (lambda: _csr(OID_SNP, b"\x30\x00"), "not valid DER"),
        (lambda: _csr(OID_SGX, b"\x04\x01\x00"), "not valid DER"),
        (lambda: b"", "empty"),
        (lambda: b"\x30\x82\x01", "not a DER PKCS#10"),
    ],
    ids=["kvm-value", "critical", "unknown-oid", "snp-der", "sgx-der", "empty", "truncated"],
)
def test_malformed_csrs_are_typed_errors(build: object, needle: str) -> None:
    with pytest.raises(ProtocolError) as err:
        parse_upstream_csr(build())  # type: ignore[operator]
    assert needle in err.value.message and err.value.kind == "InvalidRequest"


def test_csr_without_evidence_is_unauthorized() -> None:
    with pytest.raises(ProtocolError) as err:
        parse_upstream_csr(_csr(None))
    assert err.value.kind == "Unauthorized"


def test_bad_signature_is_refused() -> None:
    der = bytearray(MILAN.read_bytes())
    der[-5] ^= 0x01  # inside the signature BIT STRING
    with pytest.raises(ProtocolError) as err:
        parse_upstream_csr(bytes(der))
    assert "signature" in err.value.message


def test_sans_are_read() -> None:
    import ipaddress

    san = x509.SubjectAlternativeName([x509.DNSName("keep.example"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    assert parse_upstream_csr(_csr(OID_KVM, extra=[san])).sans == ("keep.example", "127.0.0.1")
    uri = x509.SubjectAlternativeName([x509.UniformResourceIdentifier("https://x.example/")])
    with pytest.raises(ProtocolError):
        parse_upstream_csr(_csr(OID_KVM, extra=[uri]))


def test_bundle_is_a_sequence_of_csrs() -> None:
    a, b = MILAN.read_bytes(), _csr(OID_KVM)
    body = a + b
    n = len(body)
    bundle = b"\x30\x82" + n.to_bytes(2, "big") + body
    assert [c.kind for c in parse_upstream_bundle(bundle)] == ["snp", "kvm"]
    with pytest.raises(ProtocolError):
        parse_upstream_bundle(b"\x30\x00")
    with pytest.raises(ProtocolError):
        parse_upstream_bundle(bundle + b"\x00")


# --- verification as of capture time --------------------------------------------------------


def test_milan_csr_verifies_as_of_its_capture_time() -> None:
    ev = verify_upstream(parse_upstream_csr(MILAN.read_bytes()), at=CAPTURED)
    assert ev is not None
    assert ev.product == "Milan" and ev.measurement.hex() == MILAN_HASH
    assert ev.debug is False


def test_milan_csr_is_refused_after_its_crl_expired() -> None:
    with pytest.raises(ChainInvalid) as err:
        verify_upstream(parse_upstream_csr(MILAN.read_bytes()),
                        at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    assert err.value.check == "snp.crl.validity"


def test_evidence_moved_to_another_key_is_refused() -> None:
    stolen = _csr(OID_SNP, _ext_value(MILAN.read_bytes()))
    with pytest.raises(AttestationError) as err:
        verify_upstream(parse_upstream_csr(stolen), at=CAPTURED)
    assert err.value.check == "upstream.report_data"


def test_evidence_with_a_p256_key_is_refused() -> None:
    stolen = _csr(OID_SNP, _ext_value(MILAN.read_bytes()), curve=ec.SECP256R1())
    with pytest.raises(AttestationError) as err:
        verify_upstream(parse_upstream_csr(stolen), at=CAPTURED)
    assert err.value.check == "upstream.snp.key"


@pytest.mark.parametrize("path", [I5, XEON], ids=["i5", "xeon"])
def test_sgx_csrs_are_refused_for_missing_qe_identity(path: Path) -> None:
    with pytest.raises(AttestationError) as err:
        verify_upstream(parse_upstream_csr(path.read_bytes()),
                        at=dt.datetime(2023, 1, 27, tzinfo=dt.UTC))
    assert err.value.check == "upstream.sgx.qe_identity"
    assert "QE Identity" in err.value.message and err.value.hint


# --- against the policy that names (or does not name) their measurements ---------------------


def test_upstream_policy_accepts_the_milan_csr_and_another_refuses_it() -> None:
    ev = verify_upstream(parse_upstream_csr(MILAN.read_bytes()), at=CAPTURED)
    upstream_policy = StewardPolicy.loads((DATA / "steward.toml").read_text())
    good = appraise(upstream_policy, ev, kind="snp", vendor_root=True, workload=None,
                    workload_bound=False)
    assert good.ok and good.failed == ()
    assert good.vector["hardware"] == 2 and good.vector["executables"] == 2

    other = StewardPolicy.loads('[snp]\nhash = ["' + "ab" * 48 + '"]\n')
    bad = appraise(other, ev, kind="snp", vendor_root=True, workload=None,
                   workload_bound=False)
    assert not bad.ok and bad.status == "contraindicated"
    assert [f.rule for f in bad.failed] == ["snp.hash"]
    assert bad.failed[0].actual == bytes.fromhex(MILAN_HASH)

    pinned = StewardPolicy.loads('[workload]\nallow = ["sha384:' + "0" * 96 + '"]\n')
    unbound = appraise(pinned, ev, kind="snp", vendor_root=True, workload=None,
                       workload_bound=False)
    assert [f.rule for f in unbound.failed] == ["workload.bound"]


# --- fuzzing ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_are_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_upstream_csr(data)


_MILAN_BYTES = MILAN.read_bytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(_MILAN_BYTES) - 1), st.integers(1, 255), st.booleans())
def test_fuzz_mutated_fixture_never_crashes(pos: int, xor: int, truncate: bool) -> None:
    data = bytearray(_MILAN_BYTES)
    data[pos] ^= xor
    if truncate:
        data = data[:pos]
    with contextlib.suppress(ProtocolError):
        parse_upstream_csr(bytes(data))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([OID_SNP, OID_SGX]), st.binary(max_size=300))
def test_fuzz_evidence_values_are_protocol_errors(oid: str, value: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_upstream_csr(_csr(oid, value, curve=ec.SECP256R1()))


# --- the SGX path, given the QE Identity upstream's evidence lacks ---------------------------


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def _upstream_sgx_value(quote: bytes, crls: list[tuple[str, bytes]], chain_pem: bytes,
                        tcb_info: bytes) -> bytes:
    """The 58270.1.2 value as upstream's Keep encodes it (built here byte by byte)."""
    seq = lambda *parts: _tlv(0x30, b"".join(parts))  # noqa: E731
    crl_list = seq(seq(*(seq(_tlv(0x0C, url.encode()), der) for url, der in crls)))
    certs = [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(chain_pem)]
    return seq(_tlv(0x04, quote), crl_list, seq(seq(*certs), _tlv(0x04, tcb_info)))


def test_sgx_evidence_verifies_through_dcap_once_a_qe_identity_is_given() -> None:
    from tests.attestation.dcap_support import load_dcap

    v = load_dcap("sgx", "zkdcap-sgx-v3")
    f = v.files
    value = _upstream_sgx_value(
        v.quote,
        [("https://certificates.trustedservices.intel.com/IntelSGXRootCA.der",
          f["root_ca_crl.der"]),
         ("https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=processor"
          "&encoding=der", f["pck_crl.der"])],
        f["tcb_info_issuer_chain.pem"], f["tcb_info.json"])
    csr = parse_upstream_csr(_csr(OID_SGX, value, curve=ec.SECP256R1()))
    assert csr.kind == "sgx" and csr.report == v.quote and len(csr.crls) == 2
    qe = (f["qe_identity.json"], f["qe_identity_issuer_chain.pem"])
    # Quote, PCK chain, CRLs, TCB Info and QE Identity all verify; what remains is the
    # binding, and this vector's quote was made for another key.
    with pytest.raises(AttestationError) as err:
        verify_upstream(csr, at=v.verify_at, sgx_qe_identity=qe)
    assert err.value.check == "upstream.report_data"
    # Like upstream, the CSR key must be of the PCK's type.
    p384 = parse_upstream_csr(_csr(OID_SGX, value, curve=ec.SECP384R1()))
    with pytest.raises(AttestationError) as err_key:
        verify_upstream(p384, at=v.verify_at, sgx_qe_identity=qe)
    assert err_key.value.check == "upstream.sgx.key"
    # Without the CRLs it cannot be verified, and says which are missing.
    bare = _upstream_sgx_value(v.quote, [], f["tcb_info_issuer_chain.pem"], f["tcb_info.json"])
    with pytest.raises(AttestationError) as err2:
        verify_upstream(parse_upstream_csr(_csr(OID_SGX, bare, curve=ec.SECP256R1())),
                        at=v.verify_at, sgx_qe_identity=qe)
    assert err2.value.check == "upstream.sgx.crl"


@pytest.mark.parametrize("path", [I5, XEON], ids=["i5", "xeon"])
def test_upstream_sgx_csrs_lack_only_a_contemporary_qe_identity(path: Path) -> None:
    from tests.attestation.dcap_support import load_dcap

    f = load_dcap("sgx", "zkdcap-sgx-v3").files  # a QE Identity issued in 2025
    with pytest.raises(ChainInvalid) as err:
        verify_upstream(parse_upstream_csr(path.read_bytes()),
                        at=dt.datetime(2023, 1, 27, tzinfo=dt.UTC),
                        sgx_qe_identity=(f["qe_identity.json"],
                                         f["qe_identity_issuer_chain.pem"]))
    # The collateral the CSR carries is accepted; the fault named is the 2025 QE Identity.
    assert "QE Identity issue date" in err.value.message


_der_tree = st.recursive(
    st.tuples(st.sampled_from([0x04, 0x0C, 0x02, 0x05, 0x06, 0x17]), st.binary(max_size=12))
    .map(lambda t: _tlv(t[0], t[1])),
    lambda inner: st.lists(inner, max_size=4).map(lambda xs: _tlv(0x30, b"".join(xs))),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([OID_SNP, OID_SGX]), _der_tree)
def test_fuzz_well_formed_der_of_the_wrong_shape_is_a_protocol_error(oid: str,
                                                                     value: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_upstream_csr(_csr(oid, value, curve=ec.SECP256R1()))



_MILAN_VALUE = _ext_value(_MILAN_BYTES)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(_MILAN_VALUE) - 1), st.integers(1, 255))
@example(pos=20, xor=1)  # the VCEK's version byte -> x509.InvalidVersion (not a ValueError)
def test_fuzz_mutated_evidence_is_refused_with_typed_errors(pos: int, xor: int) -> None:
    from enarx.attestation.snp.verify import SnpVerifier

    value = bytearray(_MILAN_VALUE)
    value[pos] ^= xor  # re-signed by a fresh key: the CSR is valid, the evidence is not
    try:
        csr = parse_upstream_csr(_csr(OID_SNP, bytes(value)))
    except ProtocolError:
        return
    with pytest.raises(AttestationError):
        verify_upstream(csr, at=CAPTURED, snp_verifier=_VERIFIER.setdefault("v", SnpVerifier()))


_VERIFIER: dict[str, object] = {}


def test_vendored_fixtures_are_the_files_source_md_names() -> None:
    import re

    rows = re.findall(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{16})…` \|",
                      (DATA / "SOURCE.md").read_text(), re.M)
    assert len(rows) == 4
    for name, size, digest in rows:
        data = (DATA / name).read_bytes()
        assert len(data) == int(size) and hashlib.sha256(data).hexdigest()[:16] == digest
