"""The OCI distribution client (enarx.package.oci_dist) against the real distribution
registry 2.8 on 127.0.0.1: uploads (monolithic and chunked), manifests, tags, the referrers
tag-schema fallback (2.8 has no referrers API), tampered storage, refusals and outages."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from enarx.errors import UsageError
from enarx.package.errors import DigestMismatch
from enarx.package.oci_dist import (
    OciClient,
    RegistryRefused,
    RegistryUnavailable,
    check_name,
    check_reference,
)
from enarx.package.oci_layout import INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, sha256_digest
from tests.net.netpki import make_pki
from tests.package.ociregistry import DockerRegistry
from tests.package.ocirelay import Relay


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    reg = DockerRegistry(tmp_path_factory.mktemp("oci-dist"))
    yield reg
    reg.stop()


class Recording(httpx.BaseTransport):
    """The real HTTP transport, recording (method, path) of each request it sends."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.seen: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, request.url.path))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def client(registry: DockerRegistry, **kw: object) -> OciClient:
    return OciClient(registry.host, plain_http=True, backoff=0.01, **kw)  # type: ignore[arg-type]


def push(c: OciClient, name: str, data: bytes, **kw: object) -> str:
    d = sha256_digest(data)
    c.push_blob(name, d, len(data), io.BytesIO(data).read, **kw)  # type: ignore[arg-type]
    return d


def test_monolithic_upload_round_trips_and_is_skipped_when_present(
        registry: DockerRegistry) -> None:
    with client(registry) as c:
        c.ping()
        data = b"small blob " * 100
        d = sha256_digest(data)
        assert c.blob_size("t/mono", d) is None
        moved: list[int] = []
        assert c.push_blob("t/mono", d, len(data), io.BytesIO(data).read,
                           advance=moved.append) is True
        assert sum(moved) == len(data)
        assert c.blob_size("t/mono", d) == len(data)
        assert c.get_blob("t/mono", d, size=len(data)) == data
        # Already there: nothing is sent again.
        assert c.push_blob("t/mono", d, len(data), io.BytesIO(data).read) is False
        assert registry.blob_path(d).read_bytes() == data


def test_chunked_upload_sends_patches_in_order(registry: DockerRegistry) -> None:
    rec = Recording()
    data = os.urandom((5 << 20) // 2)  # 2.5 MiB in 1 MiB chunks: 3 PATCHes
    with client(registry, transport=rec) as c:
        d = push(c, "t/chunked", data, chunk_size=1 << 20, monolithic_max=0)
        assert b"".join(c.stream_blob("t/chunked", d, size=len(data))) == data
    methods = [m for m, p in rec.seen if "/blobs/uploads/" in p]
    assert methods == ["POST", "PATCH", "PATCH", "PATCH", "PUT"]


def test_upload_with_the_wrong_digest_is_refused_and_nothing_is_kept(
        registry: DockerRegistry) -> None:
    with client(registry) as c:
        claimed = sha256_digest(b"what was announced")
        with pytest.raises(RegistryRefused) as e:
            c.push_blob("t/bad", claimed, 5, io.BytesIO(b"other").read)
        assert e.value.status == 400 and e.value.code == "DIGEST_INVALID"
        assert c.blob_size("t/bad", claimed) is None
        big = os.urandom(3000)
        with pytest.raises(RegistryRefused):
            c.push_blob("t/bad", claimed, len(big), io.BytesIO(big).read, chunk_size=1024,
                        monolithic_max=0)
        assert c.blob_size("t/bad", claimed) is None


def test_a_file_shorter_than_announced_stops_the_upload(registry: DockerRegistry) -> None:
    with client(registry) as c, pytest.raises(UsageError, match="ended 3 bytes early"):
        c.push_blob("t/short", sha256_digest(b"x" * 10), 10, io.BytesIO(b"x" * 7).read)


def _manifest(c: OciClient, name: str, marker: str) -> bytes:
    config = json.dumps({"marker": marker}).encode()
    cd = push(c, name, config)
    return json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": cd, "size": len(config)},
                       "layers": []}).encode()


def test_manifests_by_tag_and_digest(registry: DockerRegistry) -> None:
    with client(registry) as c:
        body = _manifest(c, "t/man", "one")
        digest, subject = c.put_manifest("t/man", "v1", body)
        assert digest == sha256_digest(body) and subject is False
        got = c.get_manifest("t/man", "v1")
        assert (got.body, got.digest, got.media_type) == (body, digest, MANIFEST_MEDIA_TYPE)
        assert c.get_manifest("t/man", digest).body == body
        assert c.has_manifest("t/man", "v1") and not c.has_manifest("t/man", "v2")
        with pytest.raises(RegistryRefused) as e:
            c.get_manifest("t/man", "nope")
        assert e.value.status == 404 and e.value.code == "MANIFEST_UNKNOWN"
        assert e.value.exit_code == 2 and "127.0.0.1" in e.value.message
        # A digest reference must match the bytes we send.
        with pytest.raises(UsageError):
            c.put_manifest("t/man", sha256_digest(b"x"), body)


def test_tags_list_follows_pages(registry: DockerRegistry) -> None:
    with client(registry) as c:
        body = _manifest(c, "t/tags", "tags")
        want = [f"v{i}" for i in range(7)]
        for t in want:
            c.put_manifest("t/tags", t, body)
        assert sorted(c.tags("t/tags", page=2)) == want


def test_referrers_fall_back_to_the_tag_schema_index(registry: DockerRegistry) -> None:
    rec = Recording()
    with client(registry, transport=rec) as c:
        subject = _manifest(c, "t/ref", "subject")
        sd, _ = c.put_manifest("t/ref", "v1", subject)
        assert c.referrers("t/ref", sd) == []
        empty = push(c, "t/ref", b"{}")
        descs = []
        for i, atype in enumerate(["application/x-one", "application/x-two"]):
            layer = push(c, "t/ref", f"sig {i}".encode())
            body = json.dumps({
                "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": atype,
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty,
                           "size": 2},
                "layers": [{"mediaType": atype, "digest": layer, "size": 5}],
                "subject": {"mediaType": MANIFEST_MEDIA_TYPE, "digest": sd,
                            "size": len(subject)}}).encode()
            desc = {"mediaType": MANIFEST_MEDIA_TYPE, "digest": sha256_digest(body),
                    "size": len(body), "artifactType": atype}
            assert c.push_referrer("t/ref", body, sd, desc) == desc["digest"]
            descs.append(desc)
        # Twice the same referrer: listed once.
        c.push_referrer("t/ref", body, sd, descs[1])
        assert c.referrers("t/ref", sd) == descs
        assert c.referrers("t/ref", sd, "application/x-two") == [descs[1]]
        index = c.get_manifest("t/ref", sd.replace(":", "-"))
        assert index.json()["mediaType"] == INDEX_MEDIA_TYPE
    # 2.8 answered 404 to the referrers API, then the fallback tag was read.
    assert ("GET", f"/v2/t/ref/referrers/{sd}") in rec.seen
    assert ("GET", f"/v2/t/ref/manifests/{sd.replace(':', '-')}") in rec.seen


def test_blobs_tampered_in_registry_storage_are_refused(registry: DockerRegistry) -> None:
    with client(registry) as c:
        data = b"original content " * 64
        d = push(c, "t/tamper", data)
        path = registry.blob_path(d)
        path.write_bytes(data[:-1] + b"X")  # same length, other bytes
        with pytest.raises(DigestMismatch) as e:
            c.get_blob("t/tamper", d, size=len(data))
        assert e.value.exit_code == 4
        path.write_bytes(data + b"more")
        with pytest.raises(DigestMismatch, match="larger"):
            c.get_blob("t/tamper", d, size=len(data))
        path.write_bytes(data[:10])
        with pytest.raises(DigestMismatch, match="truncated"):
            c.get_blob("t/tamper", d, size=len(data))


def test_a_registry_that_is_down_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = OciClient(f"127.0.0.1:{port}", plain_http=True, backoff=0.01)
    with pytest.raises(RegistryUnavailable) as e:
        c.ping()
    assert e.value.exit_code == 1 and f"127.0.0.1:{port}" in e.value.message
    assert e.value.hint and "registry" in e.value.hint


@pytest.mark.parametrize("name", ["", "Upper/case", "a//b", "-a", "a/../b", "a" * 256])
def test_bad_names_are_refused_before_any_request(name: str) -> None:
    with pytest.raises(UsageError):
        check_name(name)


@pytest.mark.parametrize("ref", ["", ".tag", "sha256:abc", "sha256:" + "A" * 64,
                                 "t" * 129, "a/b"])
def test_bad_references_are_refused(ref: str) -> None:
    with pytest.raises(UsageError):
        check_reference(ref)


def test_registry_storage_holds_what_was_pushed(registry: DockerRegistry, tmp_path: Path) -> None:
    with client(registry) as c:
        d = push(c, "t/store", b"stored bytes")
    assert registry.blob_path(d).read_bytes() == b"stored bytes"


# --- faults, through a relay in front of the real registry ---------------------------------------


@pytest.fixture
def relay(registry: DockerRegistry) -> Iterator[Relay]:
    r = Relay(registry.host)
    yield r
    r.stop()


def test_transient_unavailability_is_retried_with_backoff(
        registry: DockerRegistry, relay: Relay) -> None:
    with client(registry) as c:
        body = _manifest(c, "t/retry", "retry")
        c.put_manifest("t/retry", "v1", body)
    failures = iter([("status", 503), ("status", 429)])
    relay.fault = lambda m, p: next(failures, None) if p.endswith("/manifests/v1") else None
    with OciClient(relay.host, plain_http=True, backoff=0.01) as c:
        assert c.get_manifest("t/retry", "v1").body == body
    assert relay.seen.count(("GET", "/v2/t/retry/manifests/v1")) == 3


def test_a_registry_that_keeps_failing_is_named_in_the_error(relay: Relay) -> None:
    relay.fault = lambda m, p: ("status", 503)
    with OciClient(relay.host, plain_http=True, backoff=0.01) as c, \
            pytest.raises(RegistryUnavailable) as e:
        c.ping()
    assert relay.host in e.value.message and "503" in e.value.message
    assert len(relay.seen) == 3


def test_a_slow_registry_times_out(relay: Relay) -> None:
    relay.fault = lambda m, p: ("slow", 1.0)
    with OciClient(relay.host, plain_http=True, timeout=0.3, retries=1) as c, \
            pytest.raises(RegistryUnavailable, match="timed out"):
        c.ping()


def test_an_upload_cut_midway_leaves_no_blob_and_can_be_redone(
        registry: DockerRegistry, relay: Relay) -> None:
    data = os.urandom(5000)
    d = sha256_digest(data)
    cut = iter([("cut", None)])
    relay.fault = lambda m, p: next(cut, None) if m == "PATCH" else None
    with OciClient(relay.host, plain_http=True, backoff=0.01) as c:
        with pytest.raises(RegistryUnavailable):
            c.push_blob("t/cut", d, len(data), io.BytesIO(data).read, chunk_size=2000,
                        monolithic_max=0)
        assert c.blob_size("t/cut", d) is None
        assert c.push_blob("t/cut", d, len(data), io.BytesIO(data).read, chunk_size=2000,
                           monolithic_max=0)
        assert c.get_blob("t/cut", d, size=len(data)) == data


def test_credentials_answer_a_basic_challenge_and_are_never_volunteered(
        relay: Relay) -> None:
    relay.fault = lambda m, p: ("status", 401) if len(relay.seen) == 1 else None
    # A 401 without a challenge: nothing is volunteered, the refusal says why.
    with OciClient(relay.host, plain_http=True, auth=("u", "secret"), retries=1) as c, \
            pytest.raises(RegistryRefused) as e:
        c.ping()
    assert e.value.status == 401 and e.value.hint and "credentials" in e.value.hint
    assert relay.auth == [None]
    relay.fault = lambda m, p: ("challenge", 'Basic realm="r"') if len(relay.seen) == 2 \
        else None
    with OciClient(relay.host, plain_http=True, auth=("u", "secret"), retries=1) as c:
        c.ping()
        c.ping()
    basic = "Basic " + base64.b64encode(b"u:secret").decode()
    assert relay.auth == [None, None, basic, basic]
    # Without credentials a challenge is a refusal.
    relay.fault = lambda m, p: ("challenge", 'Basic realm="r"')
    with OciClient(relay.host, plain_http=True, retries=1) as c, \
            pytest.raises(RegistryRefused, match="401"):
        c.ping()


def test_a_bearer_challenge_gets_a_token_from_the_realm(relay: Relay) -> None:
    realm = f"http://{relay.host}/token"

    def fault(m: str, p: str) -> tuple[str, object] | None:
        if p == "/token":
            return ("json", {"token": "tok-123"})
        if p == "/v2/" and len(relay.seen) == 1:
            return ("challenge", f'Bearer realm="{realm}",service="reg",scope="x:y:pull"')
        return None

    relay.fault = fault
    with OciClient(relay.host, plain_http=True, auth=("u", "pw"), retries=1) as c:
        c.ping()
    assert relay.seen == [("GET", "/v2/"), ("GET", "/token"), ("GET", "/v2/")]
    # The realm is this registry's host: it gets the basic credentials for the token.
    assert relay.auth == [None, "Basic " + base64.b64encode(b"u:pw").decode(),
                          "Bearer tok-123"]


def test_oversized_answers_are_cut_off(relay: Relay) -> None:
    huge = {"manifests": [], "pad": "x" * (5 << 20)}
    relay.fault = lambda m, p: ("json", huge) if m == "GET" and p != "/v2/" else None
    digest = sha256_digest(b"subject")
    with OciClient(relay.host, plain_http=True, retries=1) as c:
        with pytest.raises(RegistryUnavailable, match="larger than"):
            c.referrers("t/huge", digest)
        with pytest.raises(RegistryRefused, match="larger than") as e:
            c.get_manifest("t/huge", "v1")
        assert e.value.code == "SIZE_INVALID"
        with pytest.raises(RegistryUnavailable, match="larger than"):
            c.tags("t/huge")


def test_registry_error_text_cannot_drive_the_terminal(relay: Relay) -> None:
    relay.fault = lambda m, p: ("status", 400)
    with OciClient(relay.host, plain_http=True, retries=1) as c, \
            pytest.raises(RegistryRefused) as e:
        c.ping()
    assert "injected by the relay" in e.value.message
    relay.fault = lambda m, p: ("json_status", (400, {"errors": [
        {"code": "X\x1b[2J", "message": "evil\x1b]0;title\x07\nline"}]}))
    with OciClient(relay.host, plain_http=True, retries=1) as c, \
            pytest.raises(RegistryRefused) as e:
        c.ping()
    assert "\x1b" not in e.value.message and "\n" not in e.value.message
    assert "evil" in e.value.message and e.value.code == "X?[2J"


def test_tls_registry_needs_a_trusted_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    reg = DockerRegistry(tmp_path / "tls", tls=(pki.server_cert, pki.server_key))
    try:
        with OciClient(reg.host, verify=ssl.create_default_context(cafile=str(pki.ca))) as c:
            c.ping()
            d = push(c, "t/tls", b"over TLS")
            assert c.get_blob("t/tls", d, size=8) == b"over TLS"
        with OciClient(reg.host, backoff=0.01) as c, \
                pytest.raises(RegistryUnavailable, match="not trusted") as e:
            c.ping()
        assert e.value.hint and "--ca-bundle" in e.value.hint
    finally:
        reg.stop()
