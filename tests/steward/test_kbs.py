"""The key-broker protocol (steward/kbs.py): messages, the report_data binding and the JWE,
checked against an independent JOSE implementation (jwcrypto) as the other side."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey, RSAKey

from enarx.errors import ProtocolError
from enarx.steward import kbs


def _other_side() -> tuple[Any, Any]:
    """jwcrypto, the independent JOSE implementation (a test dependency). CI must have it."""
    try:
        from jwcrypto import jwe, jwk
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("jwcrypto is not installed (test dependency)")
        pytest.skip("jwcrypto is not installed")
    return jwk, jwe


def _b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _pub(priv: Any) -> dict[str, Any]:
    key = (ECKey if isinstance(priv, ec.EllipticCurvePrivateKey) else RSAKey).import_key(priv)
    out: dict[str, Any] = key.as_dict(private=False)
    return out


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa2048() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


# --- /auth ---------------------------------------------------------------------------------


def test_request_as_trustee_guests_send_it() -> None:
    body = json.dumps({"version": "0.4.0", "tee": "snp",
                       "extra-params": {"supported-hash-algorithms": ["sha384"]}})
    req = kbs.parse_request(body.encode())
    assert req.tee == "snp" and req.extra_params == {"supported-hash-algorithms": ["sha384"]}
    assert req.to_json()["extra-params"] == {"supported-hash-algorithms": ["sha384"]}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"version": "0.1.1", "tee": "snp"}, "0.4.0"),
        ({"version": "0.4.0", "tee": "nope"}, "unknown tee"),
        ({"tee": "snp"}, "version"),
        ({"version": "0.4.0", "tee": "snp", "x": 1}, "x"),
        ([1, 2], "auth request"),
    ],
    ids=["old-version", "tee", "missing", "extra", "not-object"],
)
def test_bad_requests_are_typed(body: Any, needle: str) -> None:
    with pytest.raises(ProtocolError) as err:
        kbs.parse_request(json.dumps(body))
    assert needle in err.value.message
    assert err.value.kind == ("Unauthorized" if body == {"version": "0.1.1", "tee": "snp"}
                              else "InvalidRequest")
    assert err.value.hint


def test_not_json_is_typed() -> None:
    for body in (b"{", b"\xff\xfe", b"[" * 100000):
        with pytest.raises(ProtocolError):
            kbs.parse_request(body)


def test_challenge_nonce_is_32_bytes_standard_base64_and_fresh() -> None:
    a, b = kbs.Challenge.new(), kbs.Challenge.new()
    assert a.nonce != b.nonce
    assert len(base64.b64decode(a.nonce, validate=True)) == 32
    assert a.to_json() == {"nonce": a.nonce, "extra-params": ""}


# --- /attest and the binding --------------------------------------------------------------


def _attestation(jwk: dict[str, Any], **rd: Any) -> dict[str, Any]:
    return {
        "runtime-data": {"nonce": "bm9uY2U=", "tee-pubkey": jwk, **rd},
        "tee-evidence": {"primary_evidence": {"attestation_report": "AAAA", "cert_chain": []},
                         "additional_evidence": ""},
    }


def test_expected_report_data_is_sha384_of_jcs_padded(p256: Any) -> None:
    jwk = _pub(p256)
    # Independent JCS for this ASCII-only object: sorted keys, no whitespace.
    want = {"additional-evidence": "", "nonce": "bm9uY2U=", "tee-pubkey": jwk}
    text = json.dumps(want, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha384(text.encode()).digest()
    att = kbs.parse_attestation(json.dumps(_attestation(jwk)))
    got = kbs.expected_report_data(att.runtime_data)
    assert got == digest + bytes(16) and len(got) == 64
    # Key order of the input does not matter; additional evidence and workload do.
    shuffled = {"tee-pubkey": dict(reversed(list(jwk.items()))), "nonce": "bm9uY2U="}
    assert kbs.expected_report_data(shuffled) == got
    assert kbs.expected_report_data(shuffled, "{}") != got
    wl = "sha384:" + "ab" * 48
    with_wl = dict(want, workload=wl)
    digest_wl = hashlib.sha384(json.dumps(with_wl, sort_keys=True,
                                          separators=(",", ":")).encode()).digest()
    att_wl = kbs.parse_attestation(json.dumps(_attestation(jwk, workload=wl)))
    assert kbs.expected_report_data(att_wl.runtime_data) == digest_wl + bytes(16)


def test_attestation_round_trips_and_snp_evidence_decodes(p256: Any) -> None:
    report = bytes(range(256)) * 4
    body = _attestation(_pub(p256))
    body["tee-evidence"]["primary_evidence"] = {
        "attestation_report": base64.b64encode(report).decode(),
        "cert_chain": [base64.b64encode(b"\x30\x00").decode()],
    }
    att = kbs.parse_attestation(json.dumps(body).encode())
    snp = kbs.parse_snp_evidence(att.tee_evidence)
    assert snp.report == report and snp.cert_chain == (b"\x30\x00",)
    assert att.to_json()["runtime-data"]["nonce"] == "bm9uY2U="


@pytest.mark.parametrize(
    "primary",
    [None, {"attestation_report": "***"}, {"attestation_report": 5},
     {"attestation_report": "AAAA", "cert_chain": "x"},
     {"attestation_report": "AAAA", "cert_chain": ["-_-_"]}],
    ids=["none", "not-b64", "number", "chain-type", "urlsafe-b64"],
)
def test_bad_snp_evidence_is_typed(primary: Any) -> None:
    with pytest.raises(ProtocolError):
        kbs.parse_snp_evidence({"primary_evidence": primary})


@pytest.mark.parametrize(
    ("jwk", "needle"),
    [
        ("ec384", "P-384"),
        ("private", "private key material"),
        ({"kty": "oct", "k": "AAAA"}, "private key material"),
        ({"kty": "OKP", "crv": "X25519", "x": "AAAA"}, "kty"),
        ({"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}, "not a valid EC JWK"),
        ("rsa1024", "2048"),
        ("rsa1_5", "RSA1_5"),
        ("ec-wrong-alg", "ECDH-ES"),
        ("notdict", "tee-pubkey"),
    ],
)
def test_bad_tee_pubkeys_are_typed(jwk: Any, needle: str, p256: Any, rsa2048: Any) -> None:
    if jwk == "ec384":
        jwk = _pub(ec.generate_private_key(ec.SECP384R1()))
    elif jwk == "private":
        jwk = ECKey.import_key(p256).as_dict(private=True)
    elif jwk == "rsa1024":
        nums = rsa.generate_private_key(65537, 1024).public_key().public_numbers()
        jwk = {"kty": "RSA", "n": _b64u(nums.n.to_bytes(128, "big")), "e": "AQAB"}
    elif jwk == "rsa1_5":
        jwk = dict(_pub(rsa2048), alg="RSA1_5")
    elif jwk == "ec-wrong-alg":
        jwk = dict(_pub(p256), alg="RSA-OAEP-256")
    elif jwk == "notdict":
        jwk = ["x"]
    with pytest.raises(ProtocolError) as err:
        kbs.parse_attestation(json.dumps(_attestation(jwk)))
    assert needle in err.value.message


def test_malformed_workload_is_refused(p256: Any) -> None:
    with pytest.raises(ProtocolError) as err:
        kbs.parse_attestation(json.dumps(_attestation(_pub(p256), workload="sha256:00")))
    assert "workload" in err.value.message


# --- resource JWE ---------------------------------------------------------------------------


@pytest.mark.parametrize("curve", ["p256", "p521", "rsa"])
def test_jwe_decrypts_with_jwcrypto_and_has_trustees_shape(curve: str, p256: Any,
                                                           rsa2048: Any) -> None:
    jwcrypto_jwk, jwcrypto_jwe = _other_side()
    priv = {"p256": p256, "p521": ec.generate_private_key(ec.SECP521R1()),
            "rsa": rsa2048}[curve]
    jwk = _pub(priv)
    jwe = kbs.encrypt_resource(b"top secret\x00\xff", jwk)
    assert set(jwe) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
    assert all("=" not in v and "+" not in v and "/" not in v for v in jwe.values())
    header = json.loads(base64.urlsafe_b64decode(jwe["protected"] + "=="))
    assert header["enc"] == "A256GCM"
    if curve == "rsa":
        assert header["alg"] == "RSA-OAEP-256"
    else:
        assert header["alg"] == "ECDH-ES+A256KW" and header["epk"]["kty"] == "EC"
    other = jwcrypto_jwe.JWE()
    other.deserialize(json.dumps(jwe), key=jwcrypto_jwk.JWK.from_pyca(priv))
    assert other.payload == b"top secret\x00\xff"
    assert kbs.decrypt_resource(jwe, priv) == b"top secret\x00\xff"


def test_jwe_from_jwcrypto_decrypts_with_ours(p256: Any) -> None:
    jwcrypto_jwk, jwcrypto_jwe = _other_side()
    key = jwcrypto_jwk.JWK.from_pyca(p256)
    token = jwcrypto_jwe.JWE(b"from the other side",
                             json.dumps({"alg": "ECDH-ES+A256KW", "enc": "A256GCM"}))
    token.add_recipient(key)
    compact = token.serialize(compact=True).split(".")
    jwe = dict(zip(kbs.JWE_MEMBERS, compact, strict=True))
    assert kbs.decrypt_resource(jwe, p256) == b"from the other side"


def test_aad_is_the_protected_header(p256: Any) -> None:
    jwcrypto_jwk, jwcrypto_jwe = _other_side()
    jwe = kbs.encrypt_resource(b"x", _pub(p256))
    header = json.loads(base64.urlsafe_b64decode(jwe["protected"] + "=="))
    header["kid"] = "changed"
    forged = dict(jwe, protected=base64.urlsafe_b64encode(
        json.dumps(header).encode()).rstrip(b"=").decode())
    with pytest.raises(ProtocolError) as err:
        kbs.decrypt_resource(forged, p256)
    assert err.value.kind == "JWEFailed"
    other = jwcrypto_jwe.JWE()
    with pytest.raises(jwcrypto_jwe.InvalidJWEData):
        other.deserialize(json.dumps(forged), key=jwcrypto_jwk.JWK.from_pyca(p256))


def test_jwe_for_another_key_or_malformed_is_typed(p256: Any) -> None:
    jwe = kbs.encrypt_resource(b"x", _pub(p256))
    with pytest.raises(ProtocolError):
        kbs.decrypt_resource(jwe, ec.generate_private_key(ec.SECP256R1()))
    for bad in (dict(jwe, aad="AAAA"), {k: v for k, v in jwe.items() if k != "tag"},
                dict(jwe, iv=5), dict(jwe, protected="!!"), "compact.string"):
        with pytest.raises(ProtocolError):
            kbs.decrypt_resource(bad, p256)


# --- fuzzing --------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["version", "tee", "extra-params", "runtime-data", "tee-evidence",
                         "nonce", "tee-pubkey", "kty", "crv", "x", "y", "n", "e", "alg",
                         "init-data", "workload", "primary_evidence"]) | st.text(max_size=8),
        inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_fuzz_parsers_raise_only_protocol_errors(value: Any) -> None:
    body = json.dumps(value)
    for parse in (kbs.parse_request, kbs.parse_attestation):
        with contextlib.suppress(ProtocolError):
            parse(body)
    with contextlib.suppress(ProtocolError):
        kbs.validate_tee_pubkey(value)
    if isinstance(value, dict):
        with contextlib.suppress(ProtocolError):
            kbs.parse_snp_evidence(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes_raise_only_protocol_errors(data: bytes) -> None:
    for parse in (kbs.parse_request, kbs.parse_attestation):
        with contextlib.suppress(ProtocolError):
            parse(data)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(list(kbs.JWE_MEMBERS)), st.text(max_size=40)))
def test_fuzz_jwe_raises_only_protocol_errors(jwe: dict[str, str]) -> None:
    with contextlib.suppress(ProtocolError):
        kbs.decrypt_resource(jwe, _P256)


_P256 = ec.generate_private_key(ec.SECP256R1())


def test_keep_side_builds_the_wire_form(p256: Any) -> None:
    rd = kbs.RuntimeData(nonce="bm9uY2U=", tee_pubkey=_pub(p256), workload="sha384:" + "0" * 96)
    att = kbs.Attestation(runtime_data=rd, tee_evidence=kbs.TeeEvidence(
        primary_evidence={"attestation_report": "AAAA", "cert_chain": []}))
    wire = att.to_json()
    assert set(wire) == {"runtime-data", "tee-evidence"}
    assert wire["tee-evidence"]["additional_evidence"] == ""
    assert set(wire["runtime-data"]) == {"nonce", "tee-pubkey", "workload"}
    again = kbs.parse_attestation(json.dumps(wire))
    assert kbs.expected_report_data(again.runtime_data) == kbs.expected_report_data(rd)
    assert kbs.decrypt_resource(kbs.encrypt_resource(b"k", rd.tee_pubkey),
                                ECKey.import_key(p256)) == b"k"


def test_jwe_by_hand_rsa_oaep_256_and_aad_ascii_protected(rsa2048: Any) -> None:
    """Decrypt with nothing but the RFC 7516/7518 rules: CEK = RSA-OAEP-256(encrypted_key),
    plaintext = AES-256-GCM(CEK, iv, ciphertext ‖ tag, AAD = ASCII(protected))."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    jwe = kbs.encrypt_resource(b"by hand", _pub(rsa2048))

    def b(s: str) -> bytes:
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

    cek = rsa2048.decrypt(b(jwe["encrypted_key"]), padding.OAEP(
        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    assert len(cek) == 32 and len(b(jwe["iv"])) == 12 and len(b(jwe["tag"])) == 16
    plain = AESGCM(cek).decrypt(b(jwe["iv"]), b(jwe["ciphertext"]) + b(jwe["tag"]),
                                jwe["protected"].encode("ascii"))
    assert plain == b"by hand"


def test_jwe_by_hand_ecdh_es_a256kw_with_empty_apu_apv(p256: Any) -> None:
    """ECDH-ES+A256KW as Trustee's guest decrypts it: Concat KDF (SHA-256) with AlgorithmID
    "ECDH-ES+A256KW", empty PartyUInfo/PartyVInfo, 256-bit output; then AES key unwrap."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

    jwe = kbs.encrypt_resource(b"ecdh by hand", _pub(p256))

    def b(s: str) -> bytes:
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

    header = json.loads(b(jwe["protected"]))
    epk = ec.EllipticCurvePublicNumbers(int.from_bytes(b(header["epk"]["x"]), "big"),
                                        int.from_bytes(b(header["epk"]["y"]), "big"),
                                        ec.SECP256R1()).public_key()
    z = p256.exchange(ec.ECDH(), epk)
    alg = b"ECDH-ES+A256KW"
    other = (len(alg).to_bytes(4, "big") + alg + bytes(4) + bytes(4)
             + (256).to_bytes(4, "big"))
    kek = ConcatKDFHash(hashes.SHA256(), 32, other).derive(z)
    cek = aes_key_unwrap(kek, b(jwe["encrypted_key"]))
    plain = AESGCM(cek).decrypt(b(jwe["iv"]), b(jwe["ciphertext"]) + b(jwe["tag"]),
                                jwe["protected"].encode("ascii"))
    assert plain == b"ecdh by hand"


def test_the_keep_side_of_the_protocol_loads_without_the_steward_models() -> None:
    # A Keep binds its runtime data and opens released resources before its workload starts:
    # that must not pay for building the steward's pydantic request models.
    import subprocess
    import sys

    code = ("import sys\n"
            "from enarx.steward.binding import decrypt_resource, expected_report_data\n"
            "rd = {'nonce': 'n', 'tee-pubkey': {'kty': 'EC'}}\n"
            "assert len(expected_report_data(rd)) == 64\n"
            "print(sorted(m for m in sys.modules if m.startswith(('pydantic', "
            "'enarx.steward.kbs'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    rd = {"nonce": "n", "tee-pubkey": {"kty": "EC", "crv": "P-256"}, "workload": None}
    from enarx.steward import binding

    assert binding.expected_report_data(rd, "x") == kbs.expected_report_data(rd, "x")
