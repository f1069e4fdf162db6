"""The drawbridge client against the real ``enarx registry serve`` (plain http on 127.0.0.1),
with faults injected by a relay transport between them: a registry that sends more or other
bytes than the entry, that breaks off, that serves another tag, or that answers 503."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enarx.errors import EnarxError, SignatureInvalid
from enarx.package.drawbridge import (
    DrawbridgeClient,
    RegistryError,
    RegistryRefused,
    TagDocument,
)
from enarx.package.errors import DigestMismatch, PackageError
from enarx.package.fetch import ClientOptions, fetch_to_dir, open_source, read_files
from enarx.package.publish import publish
from enarx.package.sign import create_key, load_private_key, load_public_key
from enarx.package.spec import parse_spec
from enarx.package.tree import ENTRY_TYPE, Tree
from tests.registry.server import RegistryServer

Rewrite = Callable[[httpx.Request, httpx.Response], httpx.Response]


class Relay(httpx.BaseTransport):
    """Forwards to the real registry; ``rewrite`` may alter what comes back, ``before`` may
    answer instead of the registry (a fault injected on the wire)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.rewrite: Rewrite | None = None
        self.before: Callable[[httpx.Request], httpx.Response | None] | None = None
        self.requests: list[str] = []

    def close(self) -> None:
        self.inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        if self.before is not None:
            early = self.before(request)
            if early is not None:
                return early
        resp = self.inner.handle_request(request)
        if self.rewrite is None:
            return resp
        resp.read()
        return self.rewrite(request, resp)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    s = RegistryServer(tmp_path_factory.mktemp("registry") / "state")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def published(server: RegistryServer, tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, Path]:
    """alice/app 1.0.0 (unsigned), 2.0.0 and 2.1.0 (signed by k), other content in 2.1.0."""
    root = tmp_path_factory.mktemp("pkgs")
    token = server.token("alice")
    with DrawbridgeClient(server.url, token=token) as c:
        assert c.user_register("alice") is True
        assert c.user_register("alice") is False  # 409: exists
        assert c.repo_register("alice", "app") is True
    create_key(root / "k.pem")
    opts = ClientOptions(token=token)
    for tag, content in (("1.0.0", b"one"), ("2.0.0", b"two"), ("2.1.0", b"three")):
        d = root / tag
        (d / "data").mkdir(parents=True)
        (d / "main.wasm").write_bytes(b"\0asm\1\0\0\0" + content * 50_000)
        (d / "data" / "x.txt").write_bytes(content)
        key = load_private_key(root / "k.pem") if tag != "1.0.0" else None
        publish(parse_spec(f"{server.url}/alice/app:{tag}"), d, opts, sign_key=key)
    return {"root": root}


def _spec(server: RegistryServer, tag: str) -> object:
    return parse_spec(f"{server.url}/alice/app:{tag}")


def test_repo_info_and_tags(server: RegistryServer, published: dict[str, Path]) -> None:
    with DrawbridgeClient(server.url) as c:
        info = c.repo_info("alice", "app")
        assert info["public"] is True and info["tags"] == ["1.0.0", "2.0.0", "2.1.0"]
        tag = c.get_tag("alice", "app", "1.0.0")
        assert tag.media_type == ENTRY_TYPE and not tag.signed
        with pytest.raises(RegistryRefused) as e:
            c.get_tag("alice", "app", "9.0.0")
        assert e.value.status == 404 and e.value.exit_code == 2


def test_user_info_needs_the_users_token(server: RegistryServer,
                                         published: dict[str, Path]) -> None:
    with DrawbridgeClient(server.url, token=server.token("alice")) as c:
        assert c.user_info("alice") == {"subject": "alice"}
    with DrawbridgeClient(server.url) as c, pytest.raises(RegistryRefused) as e:
        c.user_info("alice")
    assert e.value.status == 401 and e.value.hint and "ENARX_REGISTRY_TOKEN" in e.value.hint


def test_read_files_verifies(server: RegistryServer, published: dict[str, Path]) -> None:
    with closing(open_source(_spec(server, "1.0.0"))) as src:  # type: ignore[arg-type]
        resolved = src.resolve()
        files = read_files(src, resolved)
    assert files == {"main.wasm": (published["root"] / "1.0.0" / "main.wasm").read_bytes(),
                     "data/x.txt": b"one"}
    assert resolved.tree.identity == Tree.build(published["root"] / "1.0.0").identity


def _relay_opts(relay: Relay) -> ClientOptions:
    return ClientOptions(transport=relay)


@pytest.mark.parametrize("fault", ["extra", "flip", "short", "length-lie"])
def test_registry_sending_other_bytes_is_caught(server: RegistryServer,
                                                published: dict[str, Path], tmp_path: Path,
                                                fault: str) -> None:
    relay = Relay()

    def rewrite(req: httpx.Request, resp: httpx.Response) -> httpx.Response:
        if not req.url.path.endswith("/tree/main.wasm"):
            return resp
        body = resp.content
        headers = dict(resp.headers)
        if fault == "extra":
            body += b"appended"
        elif fault == "flip":
            body = body[:10] + bytes([body[10] ^ 1]) + body[11:]
        elif fault == "short":
            body = body[:-1]
        headers.pop("content-length", None)
        if fault == "length-lie":
            headers["content-length"] = str(len(body) + 1)
            return httpx.Response(resp.status_code, headers=headers, content=body + b"x")
        return httpx.Response(resp.status_code, headers=headers, content=body)

    relay.rewrite = rewrite
    with pytest.raises(DigestMismatch) as e:
        fetch_to_dir(_spec(server, "1.0.0"), tmp_path / "out",  # type: ignore[arg-type]
                     _relay_opts(relay))
    assert e.value.exit_code == 4 and "main.wasm" in e.value.message
    assert list(tmp_path.iterdir()) == []


def test_swapped_directory_is_caught(server: RegistryServer,
                                     published: dict[str, Path]) -> None:
    """The registry answers the 1.0.0 root with 2.0.0's root directory."""
    relay = Relay()

    def rewrite(req: httpx.Request, resp: httpx.Response) -> httpx.Response:
        if req.url.path.endswith("/_tag/1.0.0/tree/"):
            real = httpx.get(f"{server.url}{req.url.path.replace('1.0.0', '2.0.0')}")
            return httpx.Response(200, headers={"content-type": resp.headers["content-type"]},
                                  content=real.content)
        return resp

    relay.rewrite = rewrite
    with closing(open_source(_spec(server, "1.0.0"), _relay_opts(relay))) as src, \
            pytest.raises(DigestMismatch):  # type: ignore[arg-type]
        src.resolve()


def test_tag_repointed_to_another_signed_tag(server: RegistryServer,
                                             published: dict[str, Path]) -> None:
    """A registry serving 2.1.0's (validly signed) tag for 2.0.0 is refused: the signature
    names the version."""
    relay = Relay()

    def before(req: httpx.Request) -> httpx.Response | None:
        if req.url.path.endswith("/_tag/2.0.0"):
            real = httpx.get(f"{server.url}{req.url.path.replace('2.0.0', '2.1.0')}")
            return httpx.Response(200, headers={"content-type": real.headers["content-type"]},
                                  content=real.content)
        return None

    relay.before = before
    pub = load_public_key(published["root"] / "k.pub.pem")
    with closing(open_source(_spec(server, "2.0.0"), _relay_opts(relay))) as src, \
            pytest.raises(SignatureInvalid) as e:  # type: ignore[arg-type]
        src.resolve(pub)
    assert "another package or version" in e.value.message
    # the same signed tag, for the version it names, is fine
    with closing(open_source(_spec(server, "2.1.0"))) as src:  # type: ignore[arg-type]
        assert src.resolve(pub).signer


def test_signed_tag_disguised_as_unsigned(server: RegistryServer,
                                          published: dict[str, Path]) -> None:
    """The media type is not trusted: a JWS served as an entry is still checked as a JWS,
    and an unsigned entry served as a JWS is not a signature."""
    relay = Relay()

    def rewrite(req: httpx.Request, resp: httpx.Response) -> httpx.Response:
        if "/_tag/" in req.url.path and "/tree" not in req.url.path:
            return httpx.Response(200, headers={"content-type": ENTRY_TYPE},
                                  content=resp.content)
        return resp

    relay.rewrite = rewrite
    other = published["root"] / "other.pem"
    create_key(other)
    with closing(open_source(_spec(server, "2.0.0"), _relay_opts(relay))) as src, \
            pytest.raises(SignatureInvalid):  # type: ignore[arg-type]
        src.resolve(load_public_key(published["root"] / "other.pub.pem"))


def test_retries_on_503_then_succeeds(server: RegistryServer,
                                      published: dict[str, Path]) -> None:
    relay = Relay()
    fails = [2]

    def before(req: httpx.Request) -> httpx.Response | None:
        if fails[0] > 0:
            fails[0] -= 1
            return httpx.Response(503)
        return None

    relay.before = before
    with DrawbridgeClient(server.url, transport=relay, backoff=0.01) as c:
        assert c.tags("alice", "app") == ["1.0.0", "2.0.0", "2.1.0"]
    assert len(relay.requests) == 3


def test_gives_up_after_retries_naming_the_registry(server: RegistryServer) -> None:
    relay = Relay()
    relay.before = lambda req: httpx.Response(503, json={"detail": "overloaded"})
    with DrawbridgeClient(server.url, transport=relay, retries=2, backoff=0.01) as c, \
            pytest.raises(RegistryRefused) as e:
        c.tags("alice", "app")
    assert e.value.status == 503 and "overloaded" in e.value.message
    assert len(relay.requests) == 3


def test_broken_transfer(server: RegistryServer, published: dict[str, Path],
                         tmp_path: Path) -> None:
    relay = Relay()

    class Broken(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b"\0asm"
            raise httpx.ReadError("connection reset")

    def rewrite(req: httpx.Request, resp: httpx.Response) -> httpx.Response:
        if req.url.path.endswith("/tree/main.wasm"):
            return httpx.Response(200, stream=Broken())
        return resp

    relay.rewrite = rewrite
    with pytest.raises(RegistryError) as e:
        fetch_to_dir(_spec(server, "1.0.0"), tmp_path / "out",  # type: ignore[arg-type]
                     _relay_opts(relay))
    assert "broke off" in e.value.message and e.value.exit_code == 1
    assert list(tmp_path.iterdir()) == []


def test_registry_down() -> None:
    with DrawbridgeClient("http://127.0.0.1:1", retries=1, backoff=0.01) as c, \
            pytest.raises(RegistryError) as e:
        c.tags("alice", "app")
    assert "cannot reach the registry http://127.0.0.1:1" in e.value.message


def test_names_are_checked_before_any_request() -> None:
    relay = Relay()
    with DrawbridgeClient("http://127.0.0.1:1", transport=relay) as c:
        for bad in (("al/ice", "app"), ("alice", "a/pp"), ("alice", "..")):
            with pytest.raises(PackageError):
                c.repo_info(*bad)
        with pytest.raises(PackageError):
            c.put_tag("al ice", "app", "1.0.0", TagDocument(ENTRY_TYPE, b"{}"))
    assert relay.requests == []


@pytest.mark.parametrize(("answer", "message"), [
    (httpx.Response(200, content=b"not json"), "is not JSON"),
    (httpx.Response(200, json={"a": 1}), "not a list of names"),
    (httpx.Response(200, json=[1, 2]), "not a list of names"),
    (httpx.Response(200, content=b"[" * 2_000_000), "over"),
])
def test_garbage_answers_are_typed_errors(server: RegistryServer, answer: httpx.Response,
                                          message: str) -> None:
    relay = Relay()
    relay.before = lambda req: answer
    with DrawbridgeClient(server.url, transport=relay) as c, \
            pytest.raises(RegistryError) as e:
        c.tags("alice", "app")
    assert message in e.value.message


@pytest.mark.parametrize("tag_body", [b"{}", b"[]", b"not json", b'{"payload": 1, "signature": 2}',
                                      b"\xff" * 10])
def test_garbage_tags_are_refused(server: RegistryServer, published: dict[str, Path],
                                  tag_body: bytes) -> None:
    relay = Relay()

    def before(req: httpx.Request) -> httpx.Response | None:
        if req.url.path.endswith("/_tag/1.0.0"):
            return httpx.Response(200, headers={"content-type": ENTRY_TYPE}, content=tag_body)
        return None

    relay.before = before
    with closing(open_source(_spec(server, "1.0.0"), _relay_opts(relay))) as src, \
            pytest.raises((PackageError, SignatureInvalid)):  # type: ignore[arg-type]
        src.resolve()


def test_url_source_fetches_a_bare_module(server: RegistryServer, published: dict[str, Path],
                                          tmp_path: Path) -> None:
    url = f"{server.url}/api/v0.1.0/alice/app/_tag/1.0.0/tree/main.wasm"
    spec = parse_spec(url)
    assert spec.kind == "url"
    resolved = fetch_to_dir(spec, tmp_path / "out")
    assert (tmp_path / "out" / "main.wasm").read_bytes() == \
        (published["root"] / "1.0.0" / "main.wasm").read_bytes()
    assert list(resolved.tree.files) == ["main.wasm"]
    # a URL is vouched for by TLS only: a required signer refuses it
    with pytest.raises(SignatureInvalid):
        fetch_to_dir(spec, tmp_path / "o2", signer=load_public_key(
            published["root"] / "k.pub.pem"))
    # not a module, and not there
    with pytest.raises(PackageError):
        fetch_to_dir(parse_spec(url.replace("main.wasm", "data/x.txt")), tmp_path / "o3")
    with pytest.raises(RegistryRefused) as e:
        fetch_to_dir(parse_spec(url.replace("main.wasm", "nope.wasm")), tmp_path / "o4")
    assert e.value.status == 404
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_interrupted_publish_resumes(server: RegistryServer, published: dict[str, Path],
                                     tmp_path: Path) -> None:
    """The connection dies while main.wasm uploads: the registry shows no tag (it keeps no
    partial package), and publishing again finishes the upload."""
    pkg = tmp_path / "pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "main.wasm").write_bytes(b"\0asm\1\0\0\0" + b"resume" * 10_000)
    (pkg / "data" / "x.txt").write_bytes(b"x")
    relay = Relay()

    def before(req: httpx.Request) -> httpx.Response | None:
        if req.method == "PUT" and req.url.path.endswith("/tree/main.wasm"):
            raise httpx.ConnectError("connection reset by peer")
        return None

    relay.before = before
    token = server.token("alice")
    spec = parse_spec(f"{server.url}/alice/app:7.0.0")
    with pytest.raises(RegistryError):
        publish(spec, pkg, ClientOptions(token=token, transport=relay))
    with DrawbridgeClient(server.url) as c:
        assert "7.0.0" not in c.tags("alice", "app")
    result = publish(spec, pkg, ClientOptions(token=token))
    assert result.identity == Tree.build(pkg).identity
    with closing(open_source(spec)) as src:
        assert read_files(src, src.resolve())["main.wasm"] == (pkg / "main.wasm").read_bytes()
    # a different package under the unfinished-then-finished tag is refused
    (pkg / "data" / "x.txt").write_bytes(b"y")
    with pytest.raises(RegistryRefused) as e:
        publish(spec, pkg, ClientOptions(token=token))
    assert e.value.status == 409


# --- fuzzing: whatever a hostile registry answers, the client fails with a typed error ----------

_answers = st.lists(st.tuples(
    st.sampled_from([200, 200, 200, 201, 301, 400, 401, 404, 409, 500, 503]),
    st.sampled_from([ENTRY_TYPE, "application/jose+json", "application/json",
                     "application/vnd.drawbridge.directory.v1+json", "text/html"]),
    st.one_of(st.binary(max_size=300),
              st.sampled_from([b"{}", b"[]", b'{"digest":{},"length":1,"type":"a/b"}',
                               b'{"payload":"e30","signature":"AA"}']))),
    min_size=1, max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers=_answers)
def test_fuzz_hostile_registry(answers: list[tuple[int, str, bytes]]) -> None:
    """A PROTOCOL FAKE (httpx.MockTransport, no server): each request gets the next scripted
    answer. resolve() and a file read must end in an EnarxError, never another exception."""
    script = iter(answers)

    def handler(req: httpx.Request) -> httpx.Response:
        status, ctype, body = next(script, (404, "application/json", b"{}"))
        return httpx.Response(status, headers={"content-type": ctype}, content=body)

    opts = ClientOptions(transport=httpx.MockTransport(handler))
    spec = parse_spec("http://127.0.0.1:9/alice/app:1.0.0")
    with closing(open_source(spec, opts)) as src:
        try:
            resolved = src.resolve()
            read_files(src, resolved)
        except EnarxError:
            pass


def test_slow_registry_times_out_naming_it() -> None:
    """A real listener on 127.0.0.1 that accepts and never answers."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as srv:
        srv.listen(8)
        url = f"http://127.0.0.1:{srv.getsockname()[1]}"
        with DrawbridgeClient(url, timeout=0.3, retries=1, backoff=0.01) as c, \
                pytest.raises(RegistryError) as e:
            c.tags("alice", "app")
    assert e.value.message == f"the registry {url} did not answer in time"
    assert e.value.exit_code == 1
