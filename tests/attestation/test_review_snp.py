"""Adversarial review, SEV-SNP: chain anchoring, CRL handling, CHIP_ID masking and time."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.utils import CryptographyDeprecationWarning

from enarx.attestation.snp import clear_chain_cache, verify_report
from enarx.errors import ChainInvalid, MalformedEvidence, TcbMismatch
from enarx.platform.collateral import CollateralFetchError, Fetcher, fetch_vcek
from enarx.platform.sim import SimBackend

from snp_support import load_snp, sim_state

SIGNED = 0x2A0
AT = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


# --- a private PKI that imitates AMD's, passed as an explicit trust root --------------------


def _sign_cert(subject: x509.Name, issuer: x509.Name, pub: object, key: rsa.RSAPrivateKey,
               *, ca: bool | None, exts: tuple[x509.Extension[x509.ExtensionType], ...] = (),
               salt: int = 48) -> bytes:
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(pub).serial_number(9)  # type: ignore[arg-type]
         .not_valid_before(start).not_valid_after(start + dt.timedelta(days=3650)))
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    for e in exts:
        b = b.add_extension(e.value, critical=False)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=salt)
    return b.sign(key, hashes.SHA384(), rsa_padding=pss).public_bytes(serialization.Encoding.DER)


def _private_pki(*, ask_is_ca: bool | None = True, salt: int = 48) -> dict[str, bytes]:
    """ARK -> ASK -> VCEK with AMD's names and the real VCEK's extensions, and the real
    ms-milan-v3 report re-signed with the new VCEK key."""
    v = load_snp("ms-milan-v3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        real = x509.load_pem_x509_certificate(v.leaf)
        real_ask = x509.load_pem_x509_certificate(v.chain[0])
        real_ark = x509.load_pem_x509_certificate(v.chain[1])
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    ark = _sign_cert(real_ark.subject, real_ark.subject, ark_key.public_key(), ark_key, ca=True)
    ask = _sign_cert(real_ask.subject, real_ark.subject, ask_key.public_key(), ark_key,
                     ca=ask_is_ca, salt=salt)
    vcek = _sign_cert(real.subject, real_ask.subject, vcek_key.public_key(), ask_key, ca=None,
                      exts=tuple(real.extensions))
    body = v.report()[:SIGNED]
    r, s = decode_dss_signature(vcek_key.sign(body, ec.ECDSA(hashes.SHA384())))
    sig = r.to_bytes(72, "little") + s.to_bytes(72, "little")
    return {"report": body + sig + bytes(1184 - SIGNED - len(sig)), "vcek": vcek, "ask": ask,
            "ark": ark}


def _verify_private(pki: dict[str, bytes]) -> object:
    return verify_report(pki["report"], cert=pki["vcek"], chain=[pki["ask"]],
                         trust_roots=[pki["ark"]], at=AT)


def test_private_pki_with_proper_ca_certificates_verifies() -> None:
    assert _verify_private(_private_pki()) is not None


@pytest.mark.parametrize("ask_is_ca", [False, None], ids=["ca-false", "no-basic-constraints"])
def test_an_intermediate_that_is_not_a_ca_cannot_issue_vceks(ask_is_ca: bool | None) -> None:
    # Under a trusted root, an end-entity RSA certificate (say, a TLS server's) must not be
    # able to act as an ASK and mint VCEKs.
    with pytest.raises(ChainInvalid) as err:
        _verify_private(_private_pki(ask_is_ca=ask_is_ca))
    assert err.value.check == "snp.chain.ca"
    assert err.value.actual is not None


def test_pss_with_another_salt_length_is_not_amds_signature() -> None:
    with pytest.raises(ChainInvalid) as err:
        _verify_private(_private_pki(salt=32))
    assert err.value.check == "snp.chain.root"


# --- CRLs and chains given as one-shot iterables ---------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimBackend:
    return SimBackend(sim_state(tmp_path_factory))


def test_a_revoking_crl_given_as_a_generator_is_still_applied(sim: SimBackend) -> None:
    clear_chain_cache()
    ev = sim.evidence(bytes(64))
    crl = sim.crl([sim.ask_serial()])
    with pytest.raises(ChainInvalid) as err:
        verify_report(ev.blob, cert=ev.certs[0], chain=(c for c in [ev.certs[1]]),
                      trust_roots=(r for r in [sim.ark_pem()]), crls=(c for c in [crl]))
    assert err.value.check == "snp.chain.revoked"


# --- CHIP_ID ---------------------------------------------------------------------------------


class _MaskedChipIdSim(SimBackend):
    """A host with MaskChipId set: reports carry an all-zero CHIP_ID, the VCEK its real hwID."""

    def chip_id(self) -> bytes:
        return bytes(64)


def _verify_sim(s: SimBackend, report: bytes, vcek: bytes) -> object:
    ask = s.evidence(bytes(64)).certs[1]
    return verify_report(report, cert=vcek, chain=[ask], trust_roots=[s.ark_pem()])


def test_masked_chip_id_with_a_vcek_verifies(tmp_path_factory: pytest.TempPathFactory) -> None:
    real = SimBackend(sim_state(tmp_path_factory)).chip_id()
    s = _MaskedChipIdSim(sim_state(tmp_path_factory))
    report = s.report(bytes(64))
    assert report[0x1A0:0x1E0] == bytes(64)
    ev = _verify_sim(s, report, s.issue_vcek(hw_id=real))
    assert ev.attributes["chip_id"] == bytes(64)  # type: ignore[attr-defined]


def test_mask_chip_key_bit_does_not_switch_off_the_chip_id_check(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    s = SimBackend(sim_state(tmp_path_factory))
    s.key_info = 2  # MASK_CHIP_KEY, VCEK-signed, non-zero CHIP_ID
    with pytest.raises(TcbMismatch) as err:
        _verify_sim(s, s.report(bytes(64)), s.issue_vcek(hw_id=bytes(range(64))))
    assert err.value.check == "snp.chip_id"
    assert err.value.expected == bytes(range(64)) and err.value.actual == s.chip_id()


# --- time ------------------------------------------------------------------------------------


@pytest.mark.parametrize("at", [
    dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=1))),
    dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-1))),
])
def test_far_time_is_a_typed_error_not_an_overflow(at: dt.datetime) -> None:
    v = load_snp("ms-milan-v3")
    with pytest.raises(MalformedEvidence) as err:
        v.verify(at=at)
    assert err.value.check == "snp.time"


def test_far_past_and_future_reject_as_validity_errors() -> None:
    v = load_snp("ms-milan-v3")
    for at in (dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.datetime(9000, 1, 1, tzinfo=dt.UTC)):
        with pytest.raises(ChainInvalid) as err:
            v.verify(at=at)
        assert err.value.check == "snp.chain.validity"


# --- KDS fetch of a VLEK report --------------------------------------------------------------


def test_vcek_fetch_refuses_a_vlek_report_without_asking_kds(tmp_path: Path) -> None:
    v = load_snp("trustee-aws-milan-vlek-v3")
    fetcher = Fetcher(tmp_path)
    with pytest.raises(CollateralFetchError) as err:
        fetch_vcek(v.report(), fetcher, kds_url="http://127.0.0.1:9")
    assert "VLEK" in err.value.message
    assert fetcher.requests == 0
