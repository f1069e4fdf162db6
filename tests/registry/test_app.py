"""The registry app over its real database and blob store (in process, through Starlette's
test client): drawbridge's routes, 201/409/400 semantics, atomic tags, tokens, private repos."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enarx.registry.app import create_app
from enarx.registry.server import open_registry
from tests.registry.server import (
    API,
    DIR_TYPE,
    ENTRY_TYPE,
    Pkg,
    canonical,
    content_digest,
    entry_of,
    register,
)
from tests.steward.kbsflow import AsgiClient

WASM = b"\0asm\x01\0\0\0" + b"MARKER-MODULE" * 100


def sample() -> Pkg:
    return Pkg({"main.wasm": (WASM, "application/wasm"),
                "Enarx.toml": (b'[[files]]\nkind = "stdio"\n', "application/toml"),
                "data/a.txt": (b"alpha", "text/plain"),
                "data/sub/b.bin": (bytes(range(256)) * 40, "application/octet-stream")})


class Http:
    """Sync requests to the app in process (exceptions in the app propagate), with default
    headers."""

    def __init__(self, app: Any, headers: dict[str, str] | None = None) -> None:
        self._c = AsgiClient(app)
        self._headers = headers or {}
        OPEN.append(self._c)

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        kw["headers"] = {**self._headers, **kw.get("headers", {})}
        return self._c.request(method, url, **kw)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def head(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("HEAD", url, **kw)

    def put(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("PUT", url, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", url, **kw)


OPEN: list[AsgiClient] = []


class Reg:
    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "state"
        self.db, self.blobs = open_registry(self.state, None)
        self.app = create_app(self.db, self.blobs)
        self.anon = Http(self.app)
        self.tokens = {u: self.db.create_token(u) for u in ("alice", "bob")}

    def client(self, user: str) -> Http:
        return Http(self.app, headers={"authorization": f"Bearer {self.tokens[user]}"})

    def close(self) -> None:
        while OPEN:
            OPEN.pop().close()
        self.db.close()


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[Reg]:
    r = Reg(tmp_path)
    yield r
    r.close()


@pytest.fixture
def alice(reg: Reg) -> Http:
    c = reg.client("alice")
    register(c, "alice", "app")
    return c


def test_publish_then_read_back_every_node(reg: Reg, alice: Http) -> None:
    pkg = sample()
    assert pkg.publish(alice, "alice", "app", "1.0.0") == [201] * (1 + len(pkg.nodes))
    assert reg.anon.get(f"{API}/alice/app/_tag").json() == ["1.0.0"]
    tag = reg.anon.get(f"{API}/alice/app/_tag/1.0.0")
    assert tag.status_code == 200 and tag.content == pkg.tag_body()
    assert tag.headers["content-type"].startswith(ENTRY_TYPE)
    for path, (body, mtype) in pkg.nodes.items():
        r = reg.anon.get(f"{API}/alice/app/_tag/1.0.0/tree/{path}")
        assert r.status_code == 200, (path, r.text)
        assert r.content == body and r.headers["content-type"] == mtype
        assert "sha-384=:" + base64.b64encode(hashlib.sha384(body).digest()).decode() \
            in r.headers["content-digest"]
        head = reg.anon.head(f"{API}/alice/app/_tag/1.0.0/tree/{path}")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(body))
    # the root is also reachable as .../tree/
    assert reg.anon.get(f"{API}/alice/app/_tag/1.0.0/tree/").content == pkg.nodes[""][0]


def test_tags_are_immutable_and_listed_in_semver_order(reg: Reg, alice: Http) -> None:
    for tag in ("1.10.0", "1.2.0", "1.2.0-rc.1"):
        sample().publish(alice, "alice", "app", tag)
    assert reg.anon.get(f"{API}/alice/app/_tag").json() == ["1.2.0-rc.1", "1.2.0", "1.10.0"]
    other = Pkg({"main.wasm": (b"\0asm other", "application/wasm")})
    codes = other.publish(alice, "alice", "app", "1.2.0")
    assert codes[0] == 409  # a complete tag is never re-pointed to another tree
    r = alice.put(f"{API}/alice/app/_tag/1.2.0/tree/main.wasm", content=WASM,
                  headers={"content-type": "application/wasm",
                           "content-digest": content_digest(WASM)})
    assert r.status_code == 409
    assert reg.anon.get(f"{API}/alice/app/_tag/1.2.0/tree/main.wasm").content == WASM


def _put(c: Http, path: str, body: bytes, mtype: str, digest: str | None = None,
         **headers: str) -> int:
    h = {"content-type": mtype, "content-digest": digest or content_digest(body), **headers}
    return c.put(f"{API}/alice/app/_tag/1.0.0/tree/{path}", content=body, headers=h).status_code


def _start(alice: Http, pkg: Pkg) -> None:
    body = pkg.tag_body()
    assert alice.put(f"{API}/alice/app/_tag/1.0.0", content=body, headers={
        "content-type": ENTRY_TYPE, "content-digest": content_digest(body)}).status_code == 201
    assert _put(alice, "", pkg.nodes[""][0], DIR_TYPE) == 201


def test_bad_uploads_are_refused_and_leave_nothing(reg: Reg, alice: Http) -> None:
    pkg = sample()
    _start(alice, pkg)
    wasm = pkg.nodes["main.wasm"][0]
    evil = wasm[:-1] + b"X"
    # body differs from its Content-Digest / from the entry / wrong type / truncated
    assert _put(alice, "main.wasm", evil, "application/wasm", content_digest(wasm)) == 400
    assert _put(alice, "main.wasm", evil, "application/wasm") == 400
    assert _put(alice, "main.wasm", wasm, "text/plain") == 400
    assert _put(alice, "main.wasm", wasm[:100], "application/wasm") == 400
    assert _put(alice, "main.wasm", wasm + b"more", "application/wasm") == 400
    assert _put(alice, "main.wasm", wasm, "application/wasm", "sha-256=:nope:") == 400
    no_digest = alice.put(f"{API}/alice/app/_tag/1.0.0/tree/main.wasm", content=wasm,
                          headers={"content-type": "application/wasm"})
    assert no_digest.status_code == 400 and "Content-Digest" in no_digest.json()["detail"]
    # paths the tree does not list, or whose parent is not uploaded yet
    assert _put(alice, "extra.wasm", wasm, "application/wasm") == 404
    assert _put(alice, "data/a.txt", b"alpha", "text/plain") == 404
    assert _put(alice, "../main.wasm", wasm, "application/wasm") == 404
    # nothing became visible, no temp file is left, and no blob of a refused body exists
    assert reg.anon.get(f"{API}/alice/app/_tag").json() == []
    assert reg.anon.get(f"{API}/alice/app/_tag/1.0.0").status_code == 404
    assert reg.anon.get(f"{API}/alice/app/_tag/1.0.0/tree/").status_code == 404
    assert list((reg.state / "blobs" / "tmp").iterdir()) == []
    assert not reg.blobs.path(hashlib.sha256(evil).hexdigest()).exists()
    assert _put(alice, "main.wasm", wasm, "application/wasm") == 201


def test_interrupted_publish_is_invisible_then_resumes(reg: Reg, alice: Http) -> None:
    pkg = sample()
    codes = pkg.publish(alice, "alice", "app", "1.0.0", skip={"data/sub/b.bin"})
    assert set(codes) == {201}
    r = reg.anon.get(f"{API}/alice/app/_tag/1.0.0")
    assert r.status_code == 404 and "still being uploaded" in r.json()["detail"]
    assert reg.anon.get(f"{API}/alice/app/_tag/1.0.0/tree/main.wasm").status_code == 404
    assert reg.anon.get(f"{API}/alice/app/_tag").json() == []
    again = pkg.publish(alice, "alice", "app", "1.0.0")
    assert again[0] == 201  # same tag body: resumed
    assert again[1:].count(201) == 1 and again.count(409) == len(pkg.nodes) - 1
    assert reg.anon.get(f"{API}/alice/app/_tag").json() == ["1.0.0"]


def test_a_pending_tag_can_be_replaced_by_another_tree(reg: Reg, alice: Http) -> None:
    first = sample()
    first.publish(alice, "alice", "app", "1.0.0", skip={"main.wasm"})
    second = Pkg({"main.wasm": (b"\0asm second", "application/wasm")})
    assert second.publish(alice, "alice", "app", "1.0.0") == [201, 201, 201]
    assert reg.anon.get(f"{API}/alice/app/_tag/1.0.0/tree/main.wasm").content == b"\0asm second"
    assert reg.anon.get(f"{API}/alice/app/_tag/1.0.0/tree/data/a.txt").status_code == 404


def test_directory_with_bad_names_is_refused(reg: Reg, alice: Http) -> None:
    inner = entry_of(b"x", "text/plain")
    dup = b'{"a":' + canonical(inner) + b',"a":' + canonical(entry_of(b"y", "text/plain")) + b"}"
    for listing in ({"..": inner}, {"a/b": inner}, {"ok": {"length": 1}}, [1, 2], dup):
        root = listing if isinstance(listing, bytes) else canonical(listing)
        body = canonical(entry_of(root, DIR_TYPE))
        alice.put(f"{API}/alice/app/_tag/2.0.0", content=body, headers={
            "content-type": ENTRY_TYPE, "content-digest": content_digest(body)})
        r = alice.put(f"{API}/alice/app/_tag/2.0.0/tree/", content=root, headers={
            "content-type": DIR_TYPE, "content-digest": content_digest(root)})
        assert r.status_code == 400, listing


def test_tokens_and_owners(reg: Reg, alice: Http) -> None:
    pkg = sample()
    body = pkg.tag_body()
    hdr = {"content-type": ENTRY_TYPE, "content-digest": content_digest(body)}
    url = f"{API}/alice/app/_tag/1.0.0"
    r = reg.anon.put(url, content=body, headers=hdr)
    assert r.status_code == 401 and "registry token create" in r.json()["hint"]
    assert reg.client("bob").put(url, content=body, headers=hdr).status_code == 403
    forged = Http(reg.app, headers={"authorization": "Bearer enarx-registry-forged"})
    assert forged.put(url, content=body, headers=hdr).status_code == 401
    assert forged.get(f"{API}/alice/app").status_code == 401
    basic = Http(reg.app, headers={"authorization": "Basic YTpi"})
    assert basic.get(f"{API}/alice/app").status_code == 401
    # users: registration by the token's user only, once
    assert reg.client("bob").put(f"{API}/alice", json={"subject": "x"}).status_code == 403
    assert alice.put(f"{API}/alice", json={"subject": "alice"}).status_code == 409
    assert alice.get(f"{API}/alice").json() == {"subject": "alice"}
    assert reg.anon.get(f"{API}/alice").status_code == 401
    bob = reg.client("bob")
    assert bob.put(f"{API}/bob/r", json={"public": True}).status_code == 404  # no user yet
    assert bob.put(f"{API}/bob", json={"nosubject": 1}).status_code == 400
    # the token is stored hashed, never in the clear
    raw = (reg.state / "registry.db").read_bytes()
    assert reg.tokens["alice"].encode() not in raw


def test_private_repositories(reg: Reg, alice: Http) -> None:
    assert alice.put(f"{API}/alice/secret", json={"public": False}).status_code == 201
    pkg = sample()
    pkg.publish(alice, "alice", "secret", "1.0.0")
    for path in ("alice/secret", "alice/secret/_tag", "alice/secret/_tag/1.0.0",
                 "alice/secret/_tag/1.0.0/tree/main.wasm"):
        assert reg.anon.get(f"{API}/{path}").status_code == 401, path
        assert reg.client("bob").get(f"{API}/{path}").status_code == 403, path
        assert alice.get(f"{API}/{path}").status_code == 200, path
    assert alice.put(f"{API}/alice/secret", json={"public": True}).status_code == 409
    bad = alice.put(f"{API}/alice/other", json={"public": False, "workloads": ["sha384:ab"]})
    assert bad.status_code == 400 and "workload identity" in bad.json()["detail"]
    assert alice.put(f"{API}/alice/other", json={"public": "yes"}).status_code == 400


def test_signed_tag_jws(reg: Reg, alice: Http) -> None:
    pkg = sample()

    def b64u(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    payload = {**pkg.root, "name": "alice/app", "tag": "1.0.0"}
    jws = {"protected": b64u(b'{"alg":"ES256"}'), "payload": b64u(canonical(payload)),
           "signature": b64u(b"s" * 64)}
    body = canonical(jws)
    hdr = {"content-type": "application/jose+json", "content-digest": content_digest(body)}
    unsigned = canonical({k: v for k, v in jws.items() if k != "signature"})
    assert alice.put(f"{API}/alice/app/_tag/1.0.0", content=unsigned, headers={
        **hdr, "content-digest": content_digest(unsigned)}).status_code == 400
    assert alice.put(f"{API}/alice/app/_tag/1.0.0", content=body, headers=hdr).status_code == 201
    for path in pkg.order():
        data, mtype = pkg.nodes[path]
        assert _put(alice, path, data, mtype) == 201
    r = reg.anon.get(f"{API}/alice/app/_tag/1.0.0")
    assert r.content == body and r.headers["content-type"].startswith("application/jose+json")


def test_tag_signed_by_enarx_key(reg: Reg, alice: Http) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from enarx.package.sign import sign_tag, verify_tag

    key = ec.generate_private_key(ec.SECP256R1())
    pkg = sample()
    body = sign_tag(pkg.root, name="alice/app", tag="3.0.0", key=key)
    hdr = {"content-type": "application/jose+json", "content-digest": content_digest(body)}
    assert alice.put(f"{API}/alice/app/_tag/3.0.0", content=body, headers=hdr).status_code == 201
    for path in pkg.order():
        data, mtype = pkg.nodes[path]
        r = alice.put(f"{API}/alice/app/_tag/3.0.0/tree/{path}", content=data,
                      headers={"content-type": mtype, "content-digest": content_digest(data)})
        assert r.status_code == 201, r.text
    got = reg.anon.get(f"{API}/alice/app/_tag/3.0.0").content
    assert verify_tag(got, key.public_key(), name="alice/app", tag="3.0.0") == pkg.root


def test_routes_versions_and_methods(reg: Reg, alice: Http) -> None:
    assert reg.anon.get("/health").text == "OK"
    assert reg.anon.get("/api/v0.2.0/alice/app").status_code == 501
    assert reg.anon.get("/api/v1.0.0/alice/app").status_code == 501
    assert reg.anon.get("/api/v0.0.9/alice/app").status_code == 200
    assert reg.anon.get("/api/vX/alice/app").status_code == 404
    # odd paths get the registry's JSON answer too (no route table to fall through)
    for odd in (f"{API}/", f"{API}/%0a0", "/", "/api", "/other"):
        r = reg.anon.get(odd)
        assert r.status_code == 404 and r.json()["type"] == "NotFound", odd
    assert reg.anon.get(f"{API}/al-ice").status_code == 404
    assert reg.anon.get(f"{API}/alice/app/_tag/latest").status_code == 404
    assert reg.anon.get(f"{API}/alice/app/tags").status_code == 404
    assert reg.anon.get(f"{API}/alice/app/_tag/1.0.0/blob/x").status_code == 404
    sample().publish(alice, "alice", "app", "1.0.0")
    assert reg.anon.get(f"{API}/alice/app/_tag/1.0.0/tree/data/a.txt").content == b"alpha"
    # an encoded '/' does not address another path (segments are decoded one by one)
    assert reg.anon.get(f"{API}/alice/app/_tag/1.0.0/tree/data%2Fa.txt").status_code == 404
    assert reg.anon.get(f"{API}/alice%2Fapp/_tag").status_code == 404
    r = alice.delete(f"{API}/alice/app")
    assert r.status_code == 405 and r.json()["type"] == "MethodNotAllowed"
    assert reg.anon.get(f"{API}/alice/nope").status_code == 404
    # a huge body is refused before it is read
    assert alice.put(f"{API}/bob", content=b"x" * (1 << 17),
                     headers={"content-type": "application/json"}).status_code in (403, 413)
    big = alice.put(f"{API}/alice/big", content=b" " * (1 << 17),
                    headers={"content-type": "application/json"})
    assert big.status_code == 413


def test_state_files_are_private(reg: Reg, alice: Http) -> None:
    sample().publish(alice, "alice", "app", "1.0.0")
    assert stat.S_IMODE((reg.state / "registry.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(reg.state.stat().st_mode) == 0o700
    blobs = [p for p in (reg.state / "blobs" / "sha256").rglob("*") if p.is_file()]
    assert blobs and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in blobs)
    # content-addressed: each blob's name is its SHA-256
    assert all(hashlib.sha256(p.read_bytes()).hexdigest() == p.name for p in blobs)


def test_blob_corrupted_on_disk_is_detected_by_clients(reg: Reg, alice: Http) -> None:
    pkg = sample()
    pkg.publish(alice, "alice", "app", "1.0.0")
    p = reg.blobs.path(hashlib.sha256(WASM).hexdigest())
    p.write_bytes(WASM[:-1] + b"!")
    r = reg.anon.get(f"{API}/alice/app/_tag/1.0.0/tree/main.wasm")
    # the registry serves what the entry says; a client checking Content-Digest sees the lie
    claimed = r.headers["content-digest"]
    assert base64.b64encode(hashlib.sha384(r.content).digest()).decode() not in claimed
    assert json.loads(pkg.nodes[""][0])["main.wasm"]["length"] == len(WASM)


_SEG = st.one_of(st.text(alphabet=st.sampled_from("aZ09-._%/~ä"), max_size=12),
                 st.sampled_from(["%00", "%2F", "..", "%2e%2e", "tree", "_tag", "1.0.0"]))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "HEAD", "PUT"]),
       segs=st.lists(_SEG, max_size=7),
       ctype=st.sampled_from([ENTRY_TYPE, DIR_TYPE, "application/wasm", "application/json",
                              "application/jose+json", "", "x/y"]),
       digest=st.one_of(st.none(), st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                            max_size=60), st.just("sha-256=:AA==:")),
       body=st.binary(max_size=200), auth=st.booleans())
def test_any_request_gets_a_typed_answer(reg: Reg, alice: Http, method: str, segs: list[str],
                                         ctype: str, digest: str | None, body: bytes,
                                         auth: bool) -> None:
    c = alice if auth else reg.anon
    headers = {"content-type": ctype}
    if digest is not None:
        headers["content-digest"] = digest
    prefix = ["alice", "app", "_tag", "1.0.0", "tree"][: len(segs) % 6]
    url = API + "/" + "/".join(prefix + segs)
    r = c.request(method, url, content=body if method == "PUT" else None, headers=headers)
    assert r.status_code in (200, 201, 400, 401, 403, 404, 405, 409, 413), (url, r.text)
    if r.status_code >= 400 and method != "HEAD":
        assert "detail" in r.json()
