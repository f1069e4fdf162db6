"""Package signatures (enarx.package.sign): keys, drawbridge JWS tags checked with an
independent JOSE implementation (jwcrypto), cosign bundles checked by recomputing DSSE PAE."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st
from jwcrypto import jwk, jws

from enarx.errors import SignatureInvalid, UsageError
from enarx.package import sign
from enarx.package.tree import hash_bytes

ENTRY = hash_bytes(b'{"main.wasm":{}}', "application/vnd.drawbridge.directory.v1+json")
NAME, TAG = "alice/app", "1.2.3"
DIGEST = "sha256:" + "12" * 32


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def other() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def raw_sig(key: ec.EllipticCurvePrivateKey, signing_input: str) -> str:
    """A JWS ES256 signature (raw r||s, base64url) made here, not by enarx."""
    r, s_ = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return b64u(r.to_bytes(32, "big") + s_.to_bytes(32, "big"))


# --- keys ------------------------------------------------------------------------------------


def test_create_key_files_modes_and_fingerprint(tmp_path: Path) -> None:
    files = sign.create_key(tmp_path / "signing.pem")
    assert files.public == tmp_path / "signing.pub.pem"
    assert stat.S_IMODE(files.private.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.public.stat().st_mode) == 0o644
    assert b"BEGIN PRIVATE KEY" in files.private.read_bytes()  # PKCS#8, unencrypted
    priv = sign.load_private_key(files.private)
    pub = sign.load_public_key(files.public)
    spki = pub.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)
    assert files.fingerprint == "sha256:" + hashlib.sha256(spki).hexdigest()
    assert sign.fingerprint(priv) == files.fingerprint == sign.fingerprint(pub)
    assert sign.public_key_path(Path("k")) == Path("k.pub.pem")


def test_create_key_never_overwrites(tmp_path: Path) -> None:
    first = sign.create_key(tmp_path / "k.pem")
    before = first.private.read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        sign.create_key(tmp_path / "k.pem")
    first.private.unlink()  # the public key alone also blocks
    with pytest.raises(UsageError, match="already exists"):
        sign.create_key(tmp_path / "k.pem")
    assert before  # (the old private key was ours to delete)
    with pytest.raises(UsageError, match="no such directory"):
        sign.create_key(tmp_path / "missing" / "k.pem")


def test_key_files_are_created_exclusively(tmp_path: Path) -> None:
    # Even a file that appears after the existence check is never replaced.
    target = tmp_path / "k.pem"
    target.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        sign._write_new(target, b"new key", 0o600)
    assert target.read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.pem"]  # no temp file left


def test_key_loading_refusals(tmp_path: Path) -> None:
    files = sign.create_key(tmp_path / "k.pem")
    files.private.chmod(0o644)
    with pytest.raises(UsageError, match="readable by other users") as e:
        sign.load_private_key(files.private)
    assert e.value.hint and "chmod 600" in e.value.hint
    rsa_pem = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    (tmp_path / "rsa.pem").write_bytes(rsa_pem)
    (tmp_path / "rsa.pem").chmod(0o600)
    with pytest.raises(UsageError, match="P-256"):
        sign.load_private_key(tmp_path / "rsa.pem")
    for bad in (b"", b"garbage", files.private.read_bytes()):
        (tmp_path / "bad.pub.pem").write_bytes(bad)
        with pytest.raises(UsageError):
            sign.load_public_key(tmp_path / "bad.pub.pem")
    with pytest.raises(UsageError, match="cannot read"):
        sign.load_public_key(tmp_path / "none.pem")
    with pytest.raises(UsageError, match="directory"):
        sign.load_public_key(tmp_path)
    os.mkfifo(tmp_path / "fifo.pem")  # must not hang waiting for a writer
    with pytest.raises(UsageError, match="not a regular file"):
        sign.load_public_key(tmp_path / "fifo.pem")


# --- drawbridge signed tags -------------------------------------------------------------------


def test_signed_tag_verifies_with_jwcrypto_and_ours(key: ec.EllipticCurvePrivateKey) -> None:
    body = sign.sign_tag(ENTRY.to_json(), name=NAME, tag=TAG, key=key)
    assert sign.is_signed_tag(body) and not sign.is_signed_tag(ENTRY.to_bytes())
    # An independent JOSE implementation accepts it as a flattened JWS with ES256.
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    token = jws.JWS()
    token.deserialize(body.decode(), key=jwk.JWK.from_pem(pem), alg="ES256")
    payload = json.loads(token.payload)
    assert payload == {"entry": ENTRY.to_json(), "name": NAME, "tag": TAG,
                       "tree": "sha384:" + ENTRY.sha384_hex()}
    assert token.payload == rfc8785.dumps(payload)
    header = json.loads(unb64u(json.loads(body)["protected"]))
    assert header == {"alg": "ES256", "cty": sign.SIGNED_TAG_TYPE,
                      "kid": sign.fingerprint(key)}
    assert sign.verify_tag(body, key.public_key(), name=NAME, tag=TAG) == ENTRY.to_json()
    assert sign.unverified_tag_entry(body) == ENTRY.to_json()


def test_signed_tag_from_jwcrypto_general_form_verifies(key: ec.EllipticCurvePrivateKey,
                                                        other: ec.EllipticCurvePrivateKey
                                                        ) -> None:
    payload = rfc8785.dumps({"entry": ENTRY.to_json(), "name": NAME, "tag": TAG,
                             "tree": "sha384:" + ENTRY.sha384_hex()})
    token = jws.JWS(payload)
    for k in (other, key):
        pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
        token.add_signature(jwk.JWK.from_pem(pem), alg="ES256",
                            protected=json.dumps({"alg": "ES256"}))
    body = token.serialize().encode()
    assert "signatures" in json.loads(body)
    assert sign.verify_tag(body, key.public_key(), name=NAME, tag=TAG) == ENTRY.to_json()


def test_signed_tag_refusals(key: ec.EllipticCurvePrivateKey,
                             other: ec.EllipticCurvePrivateKey) -> None:
    body = sign.sign_tag(ENTRY.to_json(), name=NAME, tag=TAG, key=key)
    doc = json.loads(body)

    def refused(b: bytes, *, name: str = NAME, tag: str = TAG,
                pub: ec.EllipticCurvePublicKey | None = None) -> SignatureInvalid:
        with pytest.raises(SignatureInvalid) as e:
            sign.verify_tag(b, pub or key.public_key(), name=name, tag=tag)
        assert e.value.exit_code == 4 and e.value.check == "package.signature"
        return e.value

    assert "not signed" in refused(ENTRY.to_bytes()).message
    assert "given public key" in refused(body, pub=other.public_key()).message
    # Replayed onto another repository or version (a tag re-pointed by the registry).
    assert "another package" in refused(body, name="mallory/app").message
    refused(body, tag="1.2.4")
    # A payload swapped under the original signature.
    forged = rfc8785.dumps({"entry": ENTRY.to_json(), "name": NAME, "tag": "9.9.9",
                            "tree": "sha384:" + ENTRY.sha384_hex()})
    refused(json.dumps({**doc, "payload": b64u(forged)}).encode(), tag="9.9.9")
    # alg "none" and unknown critical extensions are never accepted.
    none = b64u(json.dumps({"alg": "none"}).encode())
    refused(json.dumps({**doc, "protected": none, "signature": ""}).encode())
    crit = b64u(json.dumps({"alg": "ES256", "crit": ["x"], "x": 1}).encode())
    refused(json.dumps({**doc, "protected": crit,
                        "signature": raw_sig(key, f"{crit}.{doc['payload']}")}).encode())
    plain = b64u(json.dumps({"alg": "ES256"}).encode())  # the same, without crit, passes
    sign.verify_tag(json.dumps({**doc, "protected": plain, "signature": raw_sig(
        key, f"{plain}.{doc['payload']}")}).encode(), key.public_key(), name=NAME, tag=TAG)
    # A payload whose tree is not its entry's digest.
    bad_tree = rfc8785.dumps({"entry": ENTRY.to_json(), "name": NAME, "tag": TAG,
                              "tree": "sha384:" + "00" * 48})
    refused(json.dumps({**doc, "payload": b64u(bad_tree)}).encode())
    # A validly signed payload that repeats "name": parsers disagree on which one counts.
    dup = (b'{"entry":' + rfc8785.dumps(ENTRY.to_json()) + b',"name":"mallory/app","name":"'
           + NAME.encode() + b'","tag":"' + TAG.encode() + b'","tree":"sha384:'
           + ENTRY.sha384_hex().encode() + b'"}')
    prot = b64u(json.dumps({"alg": "ES256"}).encode())
    assert "repeats a member" in refused(json.dumps({
        "payload": b64u(dup), "protected": prot,
        "signature": raw_sig(key, f"{prot}.{b64u(dup)}")}).encode()).message
    # A DER signature where JWS wants raw r||s.
    der = key.sign(b"x", ec.ECDSA(hashes.SHA256()))
    refused(json.dumps({**doc, "signature": b64u(der)}).encode())


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(["payload", "protected", "signature", "signatures",
                                     "header"]),
                    st.one_of(st.text(max_size=40), st.integers(), st.none(),
                              st.lists(st.dictionaries(st.sampled_from(
                                  ["protected", "signature"]), st.text(max_size=40)),
                                  max_size=3)),
                    max_size=5).map(lambda d: json.dumps(d).encode()),
))
def test_fuzz_tag_verification_only_typed_errors(body: bytes) -> None:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(SignatureInvalid):
        sign.verify_tag(body, pub, name=NAME, tag=TAG)
    with contextlib.suppress(SignatureInvalid):
        sign.unverified_tag_entry(body)
    sign.is_signed_tag(body)


# --- cosign bundles ---------------------------------------------------------------------------


def test_cosign_bundle_checked_independently(key: ec.EllipticCurvePrivateKey) -> None:
    bundle = json.loads(sign.cosign_bundle(DIGEST, key, name="127.0.0.1:5000/app"))
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    assert bundle["verificationMaterial"] == {
        "publicKey": {"hint": base64.b64encode(hashlib.sha256(spki).digest()).decode()}}
    env = bundle["dsseEnvelope"]
    assert env["payloadType"] == "application/vnd.in-toto+json"
    payload = base64.b64decode(env["payload"])
    statement = json.loads(payload)
    assert statement == {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "127.0.0.1:5000/app", "digest": {"sha256": "12" * 32}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    }
    # DSSE v1 PAE written out from the DSSE protocol text, not from sign.pae.
    ptype = b"application/vnd.in-toto+json"
    pae = b"DSSEv1 " + str(len(ptype)).encode() + b" " + ptype + b" " + \
        str(len(payload)).encode() + b" " + payload
    assert sign.pae(ptype.decode(), payload) == pae
    (sig,) = env["signatures"]
    key.public_key().verify(base64.b64decode(sig["sig"]), pae, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):  # and not over the bare payload
        key.public_key().verify(base64.b64decode(sig["sig"]), payload,
                                ec.ECDSA(hashes.SHA256()))
    sign.verify_cosign_bundle(json.dumps(bundle).encode(), key.public_key(), DIGEST)


def test_cosign_bundle_refusals(key: ec.EllipticCurvePrivateKey,
                                other: ec.EllipticCurvePrivateKey) -> None:
    raw = sign.cosign_bundle(DIGEST, key)
    doc = json.loads(raw)

    def refused(b: bytes, pub: ec.EllipticCurvePublicKey | None = None,
                digest: str = DIGEST) -> str:
        with pytest.raises(SignatureInvalid) as e:
            sign.verify_cosign_bundle(b, pub or key.public_key(), digest)
        return e.value.message

    assert "given public key" in refused(raw, other.public_key())
    assert "not an OCI manifest digest" in refused(raw, digest=DIGEST + "\n")
    with pytest.raises(UsageError):
        sign.cosign_bundle(DIGEST + "\n", key)
    assert "another manifest" in refused(raw, digest="sha256:" + "34" * 32)
    refused(json.dumps({**doc, "mediaType": "x"}).encode())

    def with_statement(st_: dict[str, Any], signer: ec.EllipticCurvePrivateKey = key) -> bytes:
        payload = json.dumps(st_).encode()
        sig = signer.sign(sign.pae(sign.DSSE_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
        env = {"payload": base64.b64encode(payload).decode(),
               "payloadType": sign.DSSE_PAYLOAD_TYPE,
               "signatures": [{"sig": base64.b64encode(sig).decode()}]}
        return json.dumps({**doc, "dsseEnvelope": env}).encode()

    good = json.loads(sign.signed_statement(DIGEST))
    sign.verify_cosign_bundle(with_statement(good), key.public_key(), DIGEST)
    assert "not a cosign signature" in refused(with_statement(
        {**good, "predicateType": "https://slsa.dev/provenance/v1"}))
    refused(with_statement({**good, "subject": "x"}))
    # Payload swapped under the original signature.
    forged = dict(doc["dsseEnvelope"], payload=base64.b64encode(json.dumps(
        {**good, "subject": [{"digest": {"sha256": "34" * 32}}]}).encode()).decode())
    refused(json.dumps({**doc, "dsseEnvelope": forged}).encode(), digest="sha256:" + "34" * 32)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.dictionaries(
    st.sampled_from(["mediaType", "dsseEnvelope", "verificationMaterial"]),
    st.one_of(st.just(sign.BUNDLE_MEDIA_TYPE), st.text(max_size=10), st.integers(),
              st.fixed_dictionaries({"payload": st.text(max_size=20),
                                     "payloadType": st.just(sign.DSSE_PAYLOAD_TYPE),
                                     "signatures": st.lists(st.dictionaries(
                                         st.just("sig"), st.text(max_size=20)), max_size=2)})),
).map(lambda d: json.dumps(d).encode()))
def test_fuzz_bundle_verification_only_typed_errors(raw: bytes) -> None:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(SignatureInvalid):
        sign.verify_cosign_bundle(raw, pub, DIGEST)
