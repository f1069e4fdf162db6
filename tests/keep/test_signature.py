"""``keep/signature.py``: what a deploying Keep presents as ``package-signature`` (the
steward side, and the whole flow, are in tests/steward/test_signers.py and
tests/deploy/test_signers.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from cryptography.hazmat.primitives.asymmetric import ec

from enarx.keep.signature import presented_signature
from enarx.package import sign
from enarx.package.tree import Tree, hash_bytes
from enarx.steward.signers import check_signature

KEY = ec.generate_private_key(ec.SECP256R1())
TREE = Tree.from_files({"main.wasm": hash_bytes(b"\0asm", "application/wasm")})
JWS = sign.sign_tag(TREE.root_entry.to_json(), name="alice/app", tag="1", key=KEY)


def _resolved(body: bytes | None) -> SimpleNamespace:
    tag = SimpleNamespace(body=body) if body is not None else None
    return SimpleNamespace(tag=tag, tree=TREE)


def test_a_signed_tag_is_presented_as_served_and_checks_at_the_steward() -> None:
    doc = presented_signature(object(), _resolved(JWS), None)
    assert doc == {"format": "drawbridge-jws", "jws": JWS.decode()}
    assert check_signature(doc, [KEY.public_key()], TREE.identity) is None


def test_unsigned_tags_and_sources_without_signatures_present_nothing() -> None:
    unsigned = json.dumps(TREE.root_entry.to_json()).encode()
    assert presented_signature(object(), _resolved(unsigned), None) is None
    assert presented_signature(object(), _resolved(None), None) is None  # file://, URLs
    # a JWS in UTF-16 parses as JSON but cannot travel as JSON text: unsigned, no traceback
    utf16 = JWS.decode().encode("utf-16")
    assert sign.is_signed_tag(utf16)
    assert presented_signature(object(), _resolved(utf16), None) is None
