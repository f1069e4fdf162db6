"""Altered reports, swapped or forged certificates: each is rejected, naming the check."""

from __future__ import annotations

import datetime as dt
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.utils import CryptographyDeprecationWarning

from enarx.attestation.snp import verify_report
from enarx.errors import (
    ChainInvalid,
    MalformedEvidence,
    SignatureInvalid,
    TcbMismatch,
)
from enarx.platform.sim import SimBackend
from tests.attestation.snp_support import load_snp, sim_state

SIGNED = 0x2A0
OFFSETS = sorted({*range(0, SIGNED, 5), 42, 100, 0x180, SIGNED - 1})


@pytest.mark.parametrize("name", ["ms-milan-v3", "trustee-milan-v2", "ms-turin-v5",
                                  "trustee-aws-milan-vlek-v3"])
def test_any_flipped_byte_in_the_signed_region_breaks_the_signature(name: str) -> None:
    v = load_snp(name)
    good = v.report()
    v.verify(good)
    for off in OFFSETS:
        bad = bytearray(good)
        bad[off] ^= 0xFF if off != 42 else 0x01
        with pytest.raises(SignatureInvalid) as err:
            v.verify(bytes(bad))
        assert err.value.check == "snp.signature", hex(off)


def test_source_negative_cases_byte_42_plus_one_and_reported_tcb_plus_one() -> None:
    # trustee's tests: byte 42 += 1 and byte 0x180 (REPORTED_TCB) += 1. Authenticity comes
    # first here, so both fail on the signature; the TCB check itself is tested with the sim.
    v = load_snp("trustee-milan-v2")
    for off in (42, 0x180):
        bad = bytearray(v.report())
        bad[off] = (bad[off] + 1) & 0xFF
        with pytest.raises(SignatureInvalid) as err:
            v.verify(bytes(bad))
        assert err.value.check == "snp.signature"
        assert err.value.expected and err.value.actual


def test_flipped_signature_bytes_are_rejected() -> None:
    v = load_snp("ms-genoa-v3")
    good = v.report()
    for off in range(SIGNED, SIGNED + 144, 3):
        bad = bytearray(good)
        bad[off] ^= 0x80
        with pytest.raises(SignatureInvalid):
            v.verify(bytes(bad))
    # The unused tail of the 512-byte signature field is reserved and must stay zero.
    bad = bytearray(good)
    bad[SIGNED + 200] = 1
    with pytest.raises(MalformedEvidence) as err:
        v.verify(bytes(bad))
    assert err.value.check == "snp.reserved"


@pytest.mark.parametrize(("report_of", "vcek_of"), [
    ("ms-milan-v3", "teekit-gcp-milan-v5"),  # another Milan chip
    ("ms-milan-v3", "ms-genoa-v3"),  # another product
    ("ms-turin-v5", "ms-milan-v3"),
    ("ms-genoa-v3", "trustee-azure-genoa-v3"),
])
def test_another_chips_vcek_does_not_verify(report_of: str, vcek_of: str) -> None:
    target, other = load_snp(report_of), load_snp(vcek_of)
    with pytest.raises(SignatureInvalid) as err:
        verify_report(target.report(), cert=other.leaf, chain=other.chain, at=target.verify_at)
    assert err.value.check == "snp.signature"


def test_tampered_vcek_fails_the_chain() -> None:
    v = load_snp("trustee-milan-v2")
    bad = bytearray(v.leaf)
    bad[42] = (bad[42] + 1) & 0xFF  # trustee's negative case
    with pytest.raises(ChainInvalid) as err:
        verify_report(v.report(), cert=bytes(bad), chain=v.chain, at=v.verify_at)
    assert err.value.check == "snp.chain.vcek"
    assert err.value.actual == "invalid signature"
    # A byte inside the signature of the certificate always parses and must fail the chain.
    bad = bytearray(v.leaf)
    bad[-5] ^= 0xFF
    with pytest.raises(ChainInvalid) as err2:
        verify_report(v.report(), cert=bytes(bad), chain=v.chain, at=v.verify_at)
    assert err2.value.check == "snp.chain.vcek"


@pytest.mark.parametrize("cut", [0, 1, 100, SIGNED, 1183])
def test_truncated_or_extended_reports_are_malformed(cut: int) -> None:
    v = load_snp("ms-milan-v3")
    with pytest.raises(MalformedEvidence) as err:
        v.verify(v.report()[:cut])
    assert err.value.check == "snp.size"
    assert err.value.expected == 1184 and err.value.actual == cut
    with pytest.raises(MalformedEvidence):
        v.verify(v.report() + b"\0")


def test_missing_certificate_is_a_chain_error() -> None:
    v = load_snp("ms-milan-v3")
    with pytest.raises(ChainInvalid) as err:
        verify_report(v.report(), at=v.verify_at)
    assert err.value.check == "snp.chain.vcek"


# --- a forged chain that imitates AMD's names ---------------------------------------------

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def _cert(subject: x509.Name, issuer: x509.Name, pub: object, key: rsa.RSAPrivateKey,
          exts: list[x509.Extension[x509.ExtensionType]]) -> bytes:
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(pub).serial_number(7)  # type: ignore[arg-type]
         .not_valid_before(now).not_valid_after(now + dt.timedelta(days=3650)))
    for e in exts:
        b = b.add_extension(e.value, critical=False)
    return b.sign(key, hashes.SHA384(), rsa_padding=_PSS).public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def forged() -> dict[str, bytes]:
    """Fake ARK/ASK with AMD's exact names, a fake VCEK copying the real one's extensions,
    and the real report re-signed with the fake VCEK key (so only the chain can catch it)."""
    v = load_snp("ms-milan-v3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        real = x509.load_pem_x509_certificate(v.leaf)
        real_ask = x509.load_pem_x509_certificate(v.chain[0])
        real_ark = x509.load_pem_x509_certificate(v.chain[1])
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    ca = [x509.Extension(x509.BasicConstraints.oid, True,
                         x509.BasicConstraints(ca=True, path_length=None))]
    ark = _cert(real_ark.subject, real_ark.subject, ark_key.public_key(), ark_key, ca)
    ask = _cert(real_ask.subject, real_ark.subject, ask_key.public_key(), ark_key, ca)
    vcek = _cert(real.subject, real_ask.subject, vcek_key.public_key(), ask_key,
                 list(real.extensions))
    body = v.report()[:SIGNED]
    r, s = decode_dss_signature(vcek_key.sign(body, ec.ECDSA(hashes.SHA384())))
    sig = r.to_bytes(72, "little") + s.to_bytes(72, "little")
    report = body + sig + bytes(1184 - SIGNED - len(sig))
    return {"report": report, "vcek": vcek, "ask": ask, "ark": ark}


def test_chain_ending_in_a_self_made_root_is_rejected(forged: dict[str, bytes]) -> None:
    at = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    with pytest.raises(ChainInvalid) as err:
        verify_report(forged["report"], cert=forged["vcek"],
                      chain=[forged["ask"], forged["ark"]], at=at)
    assert err.value.check == "snp.chain.root"
    # Passing the fake root as trusted is the only way in, and it is an explicit choice.
    ev = verify_report(forged["report"], cert=forged["vcek"], chain=[forged["ask"]],
                       trust_roots=[forged["ark"]], at=at)
    assert ev.product == "Milan"


def test_forged_intermediate_without_its_root_is_rejected(forged: dict[str, bytes]) -> None:
    at = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    with pytest.raises(ChainInvalid) as err:
        verify_report(forged["report"], cert=forged["vcek"], chain=[forged["ask"]], at=at)
    assert err.value.check == "snp.chain.root"


def test_forged_vcek_under_the_real_ask_is_rejected(forged: dict[str, bytes]) -> None:
    v = load_snp("ms-milan-v3")
    with pytest.raises(ChainInvalid) as err:
        verify_report(forged["report"], cert=forged["vcek"], chain=v.chain, at=v.verify_at)
    assert err.value.check == "snp.chain.vcek"


# --- checks that need a validly signed report: the sim makes them ----------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimBackend:
    return SimBackend(sim_state(tmp_path_factory))


def _verify_sim(sim: SimBackend, report: bytes, vcek: bytes) -> None:
    ark = sim.ark_pem()
    ev = sim.evidence(bytes(64))
    verify_report(report, cert=vcek, chain=[ev.certs[1]], trust_roots=[ark])


def test_reported_tcb_differing_from_the_vcek_is_a_tcb_mismatch(sim: SimBackend) -> None:
    report = sim.report(bytes(64))
    claimed = {**sim.tcb, "microcode": sim.tcb["microcode"] + 1}
    with pytest.raises(TcbMismatch) as err:
        _verify_sim(sim, report, sim.issue_vcek(tcb=claimed))
    assert err.value.check == "snp.tcb"
    assert err.value.expected["microcode"] == claimed["microcode"]
    assert err.value.actual["microcode"] == sim.tcb["microcode"]


def test_chip_id_differing_from_hwid_is_rejected(sim: SimBackend) -> None:
    report = sim.report(bytes(64))
    with pytest.raises(TcbMismatch) as err:
        _verify_sim(sim, report, sim.issue_vcek(hw_id=bytes(64)))
    assert err.value.check == "snp.chip_id"
    assert err.value.expected == bytes(64) and err.value.actual == sim.chip_id()


def test_key_info_naming_the_vlek_with_a_vcek_is_rejected(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    s = SimBackend(sim_state(tmp_path_factory))
    s.key_info = 1 << 2  # SIGNING_KEY = VLEK
    with pytest.raises(SignatureInvalid) as err:
        _verify_sim(s, s.report(bytes(64)), s.vcek_der())
    assert err.value.check == "snp.signing_key"
    assert (err.value.expected, err.value.actual) == ("VLEK", "VCEK")


class _MaskedChipIdSim(SimBackend):
    """A host with MaskChipId set: reports carry an all-zero CHIP_ID, the VCEK its real hwID."""

    def chip_id(self) -> bytes:
        return bytes(64)


def test_masked_chip_id_with_a_vcek_verifies(tmp_path_factory: pytest.TempPathFactory) -> None:
    real = SimBackend(sim_state(tmp_path_factory)).chip_id()
    s = _MaskedChipIdSim(sim_state(tmp_path_factory))
    report = s.report(bytes(64))
    assert report[0x1A0:0x1E0] == bytes(64)
    ask = s.evidence(bytes(64)).certs[1]
    ev = verify_report(report, cert=s.issue_vcek(hw_id=real), chain=[ask],
                       trust_roots=[s.ark_pem()])
    assert ev.attributes["chip_id"] == bytes(64)


def test_mask_chip_key_bit_does_not_switch_off_the_chip_id_check(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    s = SimBackend(sim_state(tmp_path_factory))
    s.key_info = 2  # MASK_CHIP_KEY, VCEK-signed, non-zero CHIP_ID
    with pytest.raises(TcbMismatch) as err:
        _verify_sim(s, s.report(bytes(64)), s.issue_vcek(hw_id=bytes(range(64))))
    assert err.value.check == "snp.chip_id"
    assert err.value.expected == bytes(range(64)) and err.value.actual == s.chip_id()
