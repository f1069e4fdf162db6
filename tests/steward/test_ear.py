"""steward.ear: EAR claims, ES256/ES384 signatures with kid, JWKS, verification failures."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx.errors import AttestationError, ConfigError, MalformedEvidence, SignatureInvalid
from enarx.steward.ear import (
    EAR_PROFILE,
    EarSigner,
    build_ear,
    status_of,
    tier,
    verify_ear,
)

NOW = 1_800_000_000
WORKLOAD = "sha384:" + "ab" * 48
VECTOR = {"instance-identity": 2, "hardware": 2, "runtime-opaque": 2, "configuration": 2,
          "executables": 2, "file-system": 2, "storage-opaque": 0, "sourced-data": 0}
JWK = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "x", "y": "y"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def signer() -> EarSigner:
    return EarSigner.generate()


def claims(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "now": NOW, "ttl": 300, "status": "affirming", "vector": dict(VECTOR),
        "policy_id": "sha256:" + "0" * 64, "platform": "snp", "workload": WORKLOAD,
        "nonce": "bm9uY2Vub25jZW5vbmNlbm9uY2Vub25jZW5vbmNlMTI=", "tee_pubkey": JWK,
        "measurement": "aa" * 48, "tcb_status": "UpToDate",
    }
    args.update(kw)
    return build_ear(**args)


def test_claim_names_and_values() -> None:
    c = claims()
    assert c["eat_profile"] == EAR_PROFILE == "tag:github.com,2023:veraison/ear"
    assert c["iat"] == NOW and c["exp"] == NOW + 300
    assert c["eat_nonce"] == "bm9uY2Vub25jZW5vbmNlbm9uY2Vub25jZW5vbmNlMTI="
    assert set(c["ear.verifier-id"]) == {"developer", "build"}
    cpu0 = c["submods"]["cpu0"]
    assert cpu0["ear.status"] == "affirming"
    assert cpu0["ear.appraisal-policy-id"] == "sha256:" + "0" * 64
    assert cpu0["ear.trustworthiness-vector"] == VECTOR
    ann = cpu0["ear.veraison.annotated-evidence"]
    # Where Trustee's KBS looks for the key to encrypt resources to.
    assert ann["runtime_data_claims"]["tee-pubkey"] == JWK
    assert ann["runtime_data_claims"]["workload"] == WORKLOAD
    assert (ann["platform"], ann["measurement"], ann["tcb_status"], ann["workload"]) == (
        "snp", "aa" * 48, "UpToDate", WORKLOAD)
    assert "eat_nonce" not in claims(nonce=None)
    assert claims(ttl=dt.timedelta(minutes=2))["exp"] == NOW + 120


def test_status_is_never_better_than_the_vector() -> None:
    sim = {**VECTOR, "instance-identity": 97, "hardware": 97, "runtime-opaque": 96}
    assert claims(vector=sim, status="affirming")["submods"]["cpu0"]["ear.status"] == \
        "contraindicated"
    unpinned = {**VECTOR, "executables": 33}
    assert claims(vector=unpinned)["submods"]["cpu0"]["ear.status"] == "warning"
    # A worse status than the vector is kept.
    assert claims(status="warning")["submods"]["cpu0"]["ear.status"] == "warning"
    with pytest.raises(ValueError):
        claims(status="great")


def test_evidence_object_supplies_measurement_and_tcb() -> None:
    class Tcb:
        status = type("S", (), {"value": "OutOfDate"})()

    class Ev:
        measurement = b"\x01" * 48
        tcb = Tcb()

    ann = claims(evidence=Ev(), measurement=None, tcb_status=None)["submods"]["cpu0"][
        "ear.veraison.annotated-evidence"]
    assert ann["measurement"] == "01" * 48 and ann["tcb_status"] == "OutOfDate"


def test_tiers() -> None:
    assert [tier(v) for v in (0, 1, -1, 2, 31, 32, 95, 96, 127, -2, -96)] == [
        "none", "none", "none", "affirming", "affirming", "warning", "warning",
        "contraindicated", "contraindicated", "affirming", "contraindicated"]
    assert status_of({}) == "none"


def test_sign_and_verify(signer: EarSigner) -> None:
    token = signer.sign(claims())
    header = json.loads(unb64(token.split(".")[0]))
    assert header == {"alg": "ES256", "kid": signer.kid, "typ": "JWT"}
    jwks = signer.jwks()
    (key,) = jwks["keys"]
    assert key["kid"] == signer.kid and key["alg"] == "ES256" and key["use"] == "sig"
    assert key["kty"] == "EC" and key["crv"] == "P-256" and "d" not in key
    assert verify_ear(token, jwks, NOW + 10) == claims()
    # A JSON round trip of the JWKS (what GET /.well-known/jwks.json serves) still verifies.
    assert verify_ear(token, json.loads(json.dumps(jwks)), dt.datetime.fromtimestamp(
        NOW, dt.UTC))["submods"]["cpu0"]["ear.status"] == "affirming"


def test_signature_is_independently_valid_ecdsa(signer: EarSigner) -> None:
    token = signer.sign(claims())
    head, body, sig = token.split(".")
    raw = unb64(sig)
    assert len(raw) == 64  # JOSE r||s, not DER
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    pub = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), b"\x04" + unb64(signer.jwks()["keys"][0]["x"])
        + unb64(signer.jwks()["keys"][0]["y"]))
    pub.verify(encode_dss_signature(r, s), f"{head}.{body}".encode(),
               ec.ECDSA(hashes.SHA256()))
    assert decode_dss_signature(encode_dss_signature(r, s)) == (r, s)


def test_es384_and_pem_round_trip() -> None:
    s384 = EarSigner.generate("ES384")
    token = s384.sign(claims())
    assert json.loads(unb64(token.split(".")[0]))["alg"] == "ES384"
    again = EarSigner.from_pem(s384.private_pem(), kid=s384.kid)
    assert again.jwks() == s384.jwks()
    assert verify_ear(token, again.jwks(), NOW)["iat"] == NOW
    with pytest.raises(ConfigError):
        EarSigner(ec.generate_private_key(ec.SECP521R1()))
    with pytest.raises(ConfigError):
        EarSigner.from_pem(b"nope")


def test_expired_and_future_tokens(signer: EarSigner) -> None:
    token = signer.sign(claims())
    with pytest.raises(AttestationError) as e:
        verify_ear(token, signer.jwks(), NOW + 300 + 61)
    assert e.value.check == "ear.exp" and e.value.exit_code == 4
    with pytest.raises(AttestationError) as e:
        verify_ear(token, signer.jwks(), NOW - 120)
    assert e.value.check == "ear.iat"


def test_wrong_key_kid_alg_and_tampering(signer: EarSigner) -> None:
    token = signer.sign(claims())
    other = EarSigner(ec.generate_private_key(ec.SECP256R1()), kid=signer.kid)
    with pytest.raises(SignatureInvalid) as e:
        verify_ear(token, other.jwks(), NOW)
    assert e.value.check == "ear.signature"
    with pytest.raises(SignatureInvalid) as e:
        verify_ear(token, EarSigner.generate().jwks(), NOW)
    assert e.value.check == "ear.kid"
    head, body, sig = token.split(".")
    forged = json.loads(unb64(body))
    forged["submods"]["cpu0"]["ear.status"] = "affirming"
    forged["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["workload"] = "sha384:" + \
        "cd" * 48
    with pytest.raises(SignatureInvalid):
        verify_ear(f"{head}.{b64(json.dumps(forged).encode())}.{sig}", signer.jwks(), NOW)
    # alg confusion: "none" and HS256 with the public key as secret are refused up front.
    for alg in ("none", "HS256", "RS256"):
        h = b64(json.dumps({"alg": alg, "kid": signer.kid}).encode())
        with pytest.raises(SignatureInvalid) as e:
            verify_ear(f"{h}.{body}.{sig}", signer.jwks(), NOW)
        assert e.value.check == "ear.alg"
    # A JWKS entry for another algorithm, or an encryption key, is not used.
    wrong = {"keys": [{**signer.jwks()["keys"][0], "use": "enc"}]}
    with pytest.raises(SignatureInvalid):
        verify_ear(token, wrong, NOW)


@pytest.mark.parametrize("mutate", [
    lambda c: c.pop("eat_profile"),
    lambda c: c.update(eat_profile="tag:example,2020:other"),
    lambda c: c.update(iat="now"),
    lambda c: c.update(exp=1.5),
    lambda c: c.update(submods={}),
    lambda c: c["submods"]["cpu0"].update({"ear.status": "fine"}),
    lambda c: c["submods"]["cpu0"].update({"ear.trustworthiness-vector": {"hardware": 500}}),
    lambda c: c["submods"]["cpu0"].update({"ear.trustworthiness-vector": {"colour": 2}}),
])
def test_malformed_claims_even_when_signed(signer: EarSigner, mutate: Any) -> None:
    c = claims()
    mutate(c)
    with pytest.raises(MalformedEvidence) as e:
        verify_ear(signer.sign(c), signer.jwks(), NOW)
    assert e.value.check == "ear.format"


@pytest.mark.parametrize("token", [
    "", "a.b", "a.b.c.d", "..", "!!!.e30.", "e30.e30.", "W10.e30.sig",
    b64(b'{"alg":"ES256"}') + ".e30.sig", "x" * 70000, 5,
])
def test_malformed_tokens(signer: EarSigner, token: Any) -> None:
    with pytest.raises((MalformedEvidence, SignatureInvalid)):
        verify_ear(token, signer.jwks(), NOW)


@pytest.mark.parametrize("jwks", [{}, {"keys": "x"}, [], {"keys": [{"kid": "K"}]},
                                  {"keys": [{"kid": "K", "kty": "EC", "crv": "P-256"}]},
                                  {"keys": [{"kid": "K", "kty": "oct", "k": "AAAA"}]}])
def test_malformed_jwks(jwks: Any) -> None:
    s = EarSigner(ec.generate_private_key(ec.SECP256R1()), kid="K")
    with pytest.raises(SignatureInvalid):
        verify_ear(s.sign(claims()), jwks, NOW)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=300),
    st.tuples(st.binary(max_size=60), st.binary(max_size=200), st.binary(max_size=70)).map(
        lambda t: ".".join(b64(p) for p in t)),
    st.tuples(st.dictionaries(st.sampled_from(["alg", "kid", "typ", "crit", "b64"]),
                              st.one_of(st.text(max_size=8), st.sampled_from(["ES256", "K"]),
                                        st.integers(), st.booleans()), max_size=5),
              st.binary(max_size=100)).map(
        lambda t: b64(json.dumps(t[0]).encode()) + "." + b64(t[1]) + "." + b64(b"s" * 64)),
))
def test_fuzz_verify_ear(token: str) -> None:
    s = EarSigner(ec.generate_private_key(ec.SECP256R1()), kid="K")
    with contextlib.suppress(MalformedEvidence, SignatureInvalid, AttestationError):
        verify_ear(token, s.jwks(), NOW)
