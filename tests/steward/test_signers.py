"""``[workload] signers``: the package signature a Keep presents (runtime-data member
``package-signature``) is checked against the policy's keys AND the attested workload, and is
bound into REPORT_DATA like the rest of the runtime data (steward/signers.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enarx.package import crypt, sign
from enarx.package.oci_layout import build_package_manifest, sha256_digest
from enarx.package.tree import Tree, hash_bytes
from enarx.platform.sim import SimBackend
from enarx.steward import kbs
from enarx.steward.ca import StewardCA
from enarx.steward.ear import EarSigner
from enarx.steward.policy import StewardPolicy
from enarx.steward.service import Refused, Steward
from enarx.steward.signers import check_signature, presented
from enarx.steward.store import open_store
from tests.steward.kbsflow import new_key, public_jwk, sim_state

ENARX = Path(sys.executable).with_name("enarx")
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER = ec.generate_private_key(ec.SECP256R1())


def _tree(marker: bytes) -> Tree:
    return Tree.from_files({"main.wasm": hash_bytes(b"\0asm" + marker, "application/wasm")})


def _signed(tree: Tree, key: ec.EllipticCurvePrivateKey = KEY) -> bytes:
    return sign.sign_tag(tree.root_entry.to_json(), name="alice/app", tag="1.0.0", key=key)


PLAIN = _tree(b"plain")


def _encrypted(identity: str) -> tuple[Tree, bytes]:
    manifest = crypt.Manifest(identity=identity, resource="app/key/x").to_bytes()
    tree = Tree.from_files({
        crypt.MANIFEST_NAME: hash_bytes(manifest, crypt.MANIFEST_MEDIA_TYPE),
        "main.wasm": hash_bytes(b"ciphertext", crypt.ENCRYPTED_MEDIA_TYPE),
    })
    return tree, manifest


def _rule(failure: dict[str, Any] | None) -> str:
    assert failure is not None
    assert failure["rule"] == "workload.signer"
    return str(failure["message"])


def test_a_signature_by_a_named_key_over_the_attested_workload_passes() -> None:
    doc = presented(jws=_signed(PLAIN))
    assert check_signature(doc, [OTHER.public_key(), KEY.public_key()], PLAIN.identity) is None


@pytest.mark.parametrize(("doc", "workload", "why"), [
    (None, PLAIN.identity, "presented no signature"),
    (presented(jws=_signed(PLAIN, OTHER)), PLAIN.identity, "no signature verifies"),
    # a genuine signature, but of another package than the one the Keep runs
    (presented(jws=_signed(_tree(b"other"))), PLAIN.identity, "not the attested workload"),
    (presented(jws=_signed(PLAIN)), None, "binds no workload"),
    ({"format": "cosign-bundle", "jws": "{}"}, PLAIN.identity, "missing or unknown"),
    ({"format": "x509", "jws": "{}"}, PLAIN.identity, "must be"),
    ({"format": "drawbridge-jws", "jws": "not json"}, PLAIN.identity, "does not check"),
    ({"format": "drawbridge-jws", "jws": 7}, PLAIN.identity, "does not check"),
    ({"format": "drawbridge-jws", "jws": "{}", "extra": 1}, PLAIN.identity, "unknown members"),
    ({"format": "drawbridge-jws", "jws": "x" * 600_000}, PLAIN.identity, "too large"),
    ("a string", PLAIN.identity, "must be"),
])
def test_missing_wrong_or_foreign_signatures_are_refused(doc: Any, workload: str | None,
                                                          why: str) -> None:
    assert why in _rule(check_signature(doc, [KEY.public_key()], workload))


def test_an_encrypted_package_is_checked_through_its_signed_manifest() -> None:
    tree, manifest = _encrypted(PLAIN.identity)
    doc = presented(jws=_signed(tree), root=tree.root.to_bytes(), manifest=manifest)
    assert check_signature(doc, [KEY.public_key()], PLAIN.identity) is None
    # the manifest without the signed root directory proves nothing
    del doc["root"]
    assert "does not check" in _rule(check_signature(doc, [KEY.public_key()], PLAIN.identity))
    # without root/manifest the signed (ciphertext) tree is not the attested identity
    assert "not the attested workload" in _rule(
        check_signature(presented(jws=_signed(tree)), [KEY.public_key()], PLAIN.identity))


def test_a_host_cannot_swap_the_encrypted_packages_manifest_or_root() -> None:
    tree, _ = _encrypted(PLAIN.identity)
    other_id = _tree(b"evil").identity
    evil_tree, evil_manifest = _encrypted(other_id)
    jws = _signed(tree)
    # a manifest naming another identity (not the one the signed tree lists)
    doc = presented(jws=jws, root=tree.root.to_bytes(), manifest=evil_manifest)
    assert "does not check" in _rule(check_signature(doc, [KEY.public_key()], other_id))
    # a root directory that is not the signed tree
    doc = presented(jws=jws, root=evil_tree.root.to_bytes(), manifest=evil_manifest)
    assert "does not check" in _rule(check_signature(doc, [KEY.public_key()], other_id))


def _oci(tree: Tree) -> bytes:
    return build_package_manifest(tree, name="alice/app", tag="1.0.0")[1]


def test_a_cosign_bundle_over_the_oci_manifest_of_the_attested_workload_passes() -> None:
    raw = _oci(PLAIN)
    bundles = [sign.cosign_bundle(sha256_digest(raw), OTHER),
               sign.cosign_bundle(sha256_digest(raw), KEY)]
    doc = presented(bundles=bundles, oci_manifest=raw)
    assert check_signature(doc, [KEY.public_key()], PLAIN.identity) is None
    tree, manifest = _encrypted(PLAIN.identity)
    enc = _oci(tree)
    doc = presented(bundles=[sign.cosign_bundle(sha256_digest(enc), KEY)], oci_manifest=enc,
                    manifest=manifest)
    assert check_signature(doc, [KEY.public_key()], PLAIN.identity) is None


def test_cosign_bundles_of_another_key_or_manifest_are_refused() -> None:
    raw, other = _oci(PLAIN), _oci(_tree(b"other"))
    by_other = presented(bundles=[sign.cosign_bundle(sha256_digest(raw), OTHER)],
                         oci_manifest=raw)
    assert "no signature verifies" in _rule(
        check_signature(by_other, [KEY.public_key()], PLAIN.identity))
    # a genuine bundle of another manifest, presented with this one
    swapped = presented(bundles=[sign.cosign_bundle(sha256_digest(other), KEY)],
                        oci_manifest=raw)
    assert "no signature verifies" in _rule(
        check_signature(swapped, [KEY.public_key()], PLAIN.identity))
    # a genuine signature of another package than the attested one
    foreign = presented(bundles=[sign.cosign_bundle(sha256_digest(other), KEY)],
                        oci_manifest=other)
    assert "not the attested workload" in _rule(
        check_signature(foreign, [KEY.public_key()], PLAIN.identity))
    too_many = dict(by_other, bundles=by_other["bundles"] * 5)
    assert "does not check" in _rule(
        check_signature(too_many, [KEY.public_key()], PLAIN.identity))


# --- the steward --------------------------------------------------------------------------


@pytest.fixture
def sim(tmp_path_factory: pytest.TempPathFactory) -> SimBackend:
    return SimBackend(sim_state(tmp_path_factory))


def _steward(tmp_path: Path, sim: SimBackend, signers: list[Any]) -> Steward:
    ark = tmp_path / "ark.pem"
    ark.write_bytes(sim.ark_pem())
    policy = StewardPolicy.loads(f'allow = ["sim"]\ntrust_roots = ["{ark}"]\n'
                                 '[workload]\nsigners = ["k.pub.pem"]\n')
    return Steward(policy, StewardCA.create("t"), EarSigner.generate(),
                   open_store(None, tmp_path / "state"), [sim.ark_pem()], signers=signers)


def _attest(steward: Steward, sim: SimBackend, signature: dict[str, Any] | None, *,
            bound: dict[str, Any] | None = None) -> Any:
    sid, challenge = steward.auth(b'{"version": "0.4.0", "tee": "snp"}')
    rd: dict[str, Any] = {"nonce": challenge["nonce"], "tee-pubkey": public_jwk(new_key()),
                          "workload": PLAIN.identity}
    if signature is not None:
        rd["package-signature"] = signature
    ev = sim.evidence(kbs.expected_report_data(rd if bound is None else {**rd, **bound}))
    body = {"runtime-data": rd, "tee-evidence": {"primary_evidence": {
        "attestation_report": base64.b64encode(ev.blob).decode(),
        "cert_chain": [base64.b64encode(c).decode() for c in ev.certs]}}}
    return steward.attest(sid, json.dumps(body).encode())


def test_the_steward_accepts_a_bound_signature_by_its_signer(tmp_path: Path,
                                                            sim: SimBackend) -> None:
    steward = _steward(tmp_path, sim, [KEY.public_key()])
    try:
        out = _attest(steward, sim, presented(jws=_signed(PLAIN)))
        assert out.workload == PLAIN.identity
        with pytest.raises(Refused) as info:
            _attest(steward, sim, None)
        assert [f["rule"] for f in info.value.failed] == ["workload.signer"]
    finally:
        steward.store.close()


def test_a_signature_added_by_the_host_after_the_evidence_is_refused(
    tmp_path: Path, sim: SimBackend,
) -> None:
    """The evidence binds the runtime data without the member; the host adds a (valid)
    signature to the request: REPORT_DATA no longer matches."""
    steward = _steward(tmp_path, sim, [KEY.public_key()])
    try:
        with pytest.raises(Refused) as info:
            _attest(steward, sim, presented(jws=_signed(PLAIN)),
                    bound={"package-signature": None})
        assert [f["rule"] for f in info.value.failed] == ["report_data"]
    finally:
        steward.store.close()


def test_a_policy_naming_signers_without_loaded_keys_refuses_everything(
    tmp_path: Path, sim: SimBackend,
) -> None:
    steward = _steward(tmp_path, sim, [])
    try:
        with pytest.raises(Refused):
            _attest(steward, sim, presented(jws=_signed(PLAIN)))
    finally:
        steward.store.close()


def test_a_trustee_style_request_without_the_member_keeps_its_binding() -> None:
    rd = {"nonce": "n", "tee-pubkey": public_jwk(KEY), "workload": PLAIN.identity}
    assert kbs.runtime_data_jcs(kbs.RuntimeData.model_validate(rd)) == kbs.runtime_data_jcs(rd)
    assert b"package-signature" not in kbs.runtime_data_jcs(rd)


def test_policy_ids_of_policies_without_signers_are_unchanged() -> None:
    policy = StewardPolicy.loads('allow = ["sim"]\n')
    doc = json.loads(policy.model_dump_json())
    del doc["workload"]["signers"]
    assert policy.policy_id == "sha256:" + hashlib.sha256(rfc8785.dumps(doc)).hexdigest()
    assert StewardPolicy.loads('[workload]\nsigners = ["k.pem"]\n').policy_id != \
        StewardPolicy.loads("").policy_id


@pytest.mark.parametrize(("key_file", "why"), [
    (None, "cannot read signer key"),
    (b"not a key", "not a PEM public key"),
    (ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
     "not an ECDSA P-256 public key"),
])
def test_steward_serve_refuses_a_bad_signer_file_before_starting(
    tmp_path: Path, key_file: bytes | None, why: str,
) -> None:
    (tmp_path / "steward.toml").write_text('[workload]\nsigners = ["k.pub.pem"]\n')
    if key_file is not None:
        (tmp_path / "k.pub.pem").write_bytes(key_file)
    r = subprocess.run([str(ENARX), "steward", "serve", "--policy", str(tmp_path / "steward.toml"),
                        "--port", "0", "--state-dir", str(tmp_path / "state")],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2, r.stderr
    assert why in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "state").exists()
