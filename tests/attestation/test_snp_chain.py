"""Chain building: shipped vs explicit roots, the warm cache, and CRLs."""

from __future__ import annotations

import datetime as dt
import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.utils import CryptographyDeprecationWarning

from enarx.attestation import roots
from enarx.attestation.snp import SnpVerifier, verify_report
from enarx.attestation.snp.certs import load_cert
from enarx.errors import ChainInvalid, MalformedEvidence
from enarx.platform.sim import SimBackend
from tests.attestation.snp_support import load_snp, sim_state


def test_warm_cache_skips_the_rsa_chain_on_repeat() -> None:
    v = load_snp("ms-milan-v3")
    verifier = SnpVerifier()
    verifier.verify(v.report(), cert=v.leaf, chain=v.chain, at=v.verify_at)
    assert verifier.chains.cache_stats() == (0, 1)
    for _ in range(3):
        verifier.verify(v.report(), cert=v.leaf, chain=v.chain, at=v.verify_at)
    assert verifier.chains.cache_stats() == (3, 1)


def test_verifiers_share_no_cache_and_module_function_keeps_none() -> None:
    # Each verifier owns its cache: a warm one does not warm another, and the one-shot
    # verify_report leaves nothing behind for a later call to find.
    v = load_snp("ms-milan-v3")
    a, b = SnpVerifier(), SnpVerifier()
    a.verify(v.report(), cert=v.leaf, chain=v.chain, at=v.verify_at)
    v.verify()
    b.verify(v.report(), cert=v.leaf, chain=v.chain, at=v.verify_at)
    assert a.chains.cache_stats() == (0, 1) and b.chains.cache_stats() == (0, 1)


def test_verifier_owns_its_trust_roots(sim: SimBackend) -> None:
    ev = sim.evidence(bytes(64))
    with pytest.raises(ChainInvalid):
        SnpVerifier().verify(ev.blob, cert=ev.certs[0], chain=ev.certs[1:])
    trusting = SnpVerifier(trust_roots=[sim.ark_pem()])
    assert trusting.verify(ev.blob, cert=ev.certs[0], chain=ev.certs[1:]).product


def test_cache_never_extends_a_certificates_validity() -> None:
    v = load_snp("trustee-aws-milan-vlek-v3")
    verifier = SnpVerifier()
    kw = {"cert": v.leaf, "chain": v.chain}
    verifier.verify(v.report(), at=v.verify_at, **kw)  # cached inside the VLEK's year
    with pytest.raises(ChainInvalid) as err:
        verifier.verify(v.report(), at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), **kw)
    assert err.value.check == "snp.chain.validity"
    assert verifier.verify(v.report(), at=v.verify_at, **kw).product == "Milan"


def test_naive_time_is_utc() -> None:
    v = load_snp("ms-milan-v3")
    ev = v.verify(at=dt.datetime(2026, 6, 1))
    assert ev.verified_at == dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def test_real_ark_as_explicit_trust_root_still_reports_the_product() -> None:
    v = load_snp("ms-genoa-v3")
    ev = v.verify(trust_roots=[roots.amd_ark("Genoa")])
    assert ev.product == "Genoa"


def test_another_products_chain_is_harmless_extra_material() -> None:
    # The caller's chain only offers intermediates; the right (shipped) ASK is still found.
    v = load_snp("ms-milan-v3")
    ev = v.verify(chain=[roots.amd_ask("Genoa"), roots.amd_ark("Genoa")])
    assert "CN=SEV-Milan" in ev.chain[1].subject
    assert "ARK-Milan" in ev.chain[2].subject


def test_non_leaf_certificate_and_garbage_chain() -> None:
    v = load_snp("ms-milan-v3")
    with pytest.raises(MalformedEvidence) as err:
        v.verify(chain=[b"garbage"])
    assert err.value.check == "snp.cert.chain"
    with pytest.raises(ChainInvalid) as err2:
        verify_report(v.report(), cert=roots.amd_ask("Milan"), at=v.verify_at)
    assert err2.value.check == "snp.chain.vcek"


# --- CRLs (AMD publishes no test CRLs; the sim ARK and ASK issue them) -----------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimBackend:
    return SimBackend(sim_state(tmp_path_factory))


def _sim_verify(sim: SimBackend, crls: list[bytes]) -> object:
    ev = sim.evidence(bytes(64))
    return verify_report(ev.blob, cert=ev.certs[0], chain=ev.certs[1:],
                         trust_roots=[sim.ark_pem()], crls=crls)


def test_crl_without_our_serials_passes(sim: SimBackend) -> None:
    assert _sim_verify(sim, [sim.crl([12345])])


def test_ark_crl_revoking_the_ask_rejects(sim: SimBackend) -> None:
    with pytest.raises(ChainInvalid) as err:
        _sim_verify(sim, [sim.crl([sim.ask_serial()])])
    assert err.value.check == "snp.chain.revoked"


def test_ask_crl_revoking_the_vcek_rejects(sim: SimBackend) -> None:
    with pytest.raises(ChainInvalid) as err:
        _sim_verify(sim, [sim.crl([1], issuer="ask")])
    assert err.value.check == "snp.chain.revoked"


def test_stale_crl_rejects(sim: SimBackend) -> None:
    stale = sim.crl([], next_update=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    with pytest.raises(ChainInvalid) as err:
        _sim_verify(sim, [stale])
    assert err.value.check == "snp.crl.validity"


def test_crl_with_a_broken_signature_rejects(sim: SimBackend) -> None:
    crl = bytearray(sim.crl([]))
    crl[-3] ^= 0xFF
    with pytest.raises(ChainInvalid) as err:
        _sim_verify(sim, [bytes(crl)])
    assert err.value.check == "snp.crl"


def test_crl_of_another_issuer_does_not_concern_the_chain(sim: SimBackend) -> None:
    v = load_snp("ms-milan-v3")
    milan_ask = load_cert(roots.amd_ask("Milan"), "ask")
    crl = sim.crl([milan_ask.serial])  # same serial, but the sim ARK is not Milan's issuer
    assert v.verify(crls=[crl], at=dt.datetime.now(dt.UTC)).product == "Milan"
    with pytest.raises(MalformedEvidence) as err:
        v.verify(crls=[b"not a crl"])
    assert err.value.check == "snp.crl"


def test_a_revoking_crl_given_as_a_generator_is_still_applied(sim: SimBackend) -> None:
    ev = sim.evidence(bytes(64))
    crl = sim.crl([sim.ask_serial()])
    with pytest.raises(ChainInvalid) as err:
        verify_report(ev.blob, cert=ev.certs[0], chain=(c for c in [ev.certs[1]]),
                      trust_roots=(r for r in [sim.ark_pem()]), crls=(c for c in [crl]))
    assert err.value.check == "snp.chain.revoked"


def malformed_issuer_crl() -> bytes:
    """A DER CRL whose issuer name holds invalid UTF-8: it loads, and cryptography fails only
    when the name is decoded (lazily)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "enarx test")])
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    crl = (x509.CertificateRevocationListBuilder().issuer_name(name).last_update(now)
           .next_update(now + dt.timedelta(days=365)).sign(key, hashes.SHA256()))
    der = bytearray(crl.public_bytes(serialization.Encoding.DER))
    der[der.find(b"enarx test")] = 0xFF
    return bytes(der)


def test_crl_with_a_malformed_issuer_name_is_malformed_evidence() -> None:
    v = load_snp("ms-milan-v3")
    with pytest.raises(MalformedEvidence) as err:
        v.verify(crls=[malformed_issuer_crl()])
    assert err.value.check == "snp.crl"


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


# --- time -----------------------------------------------------------------------------------


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
