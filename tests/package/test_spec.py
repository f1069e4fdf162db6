"""enarx.package.spec: SPEC forms and the plain-HTTP (loopback) rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enarx.package.errors import InsecureTransport, SpecError
from enarx.package.spec import check_transport, is_loopback, parse_spec

D = "0123456789abcdef" * 4


def test_drawbridge_slugs() -> None:
    s = parse_spec("reg.example.org:8443/alice/my-app:1.2.3-rc.1+b5")
    assert (s.kind, s.scheme, s.host, s.user, s.repo, s.tag) == (
        "drawbridge", "https", "reg.example.org:8443", "alice", "my-app", "1.2.3-rc.1+b5")
    assert s.url == "https://reg.example.org:8443/api/v0.1.0/alice/my-app/_tag/1.2.3-rc.1+b5"
    assert s.base_url == "https://reg.example.org:8443"
    # no host: the caller's default (ENARX_REGISTRY), a host or a base URL
    assert parse_spec("alice/app:0.1.0", default_host="r.example").url == \
        "https://r.example/api/v0.1.0/alice/app/_tag/0.1.0"
    local = parse_spec("alice/app:0.1.0", default_host="http://127.0.0.1:8080")
    assert (local.scheme, local.host) == ("http", "127.0.0.1:8080")
    with pytest.raises(SpecError, match="no registry host") as e:
        parse_spec("alice/app:0.1.0")
    assert "ENARX_REGISTRY" in (e.value.hint or "")


def test_drawbridge_with_explicit_scheme_and_upstream_tag_urls() -> None:
    s = parse_spec("http://127.0.0.1:8080/alice/app:1.0.0")
    assert (s.kind, s.scheme, s.host, s.user, s.repo, s.tag) == (
        "drawbridge", "http", "127.0.0.1:8080", "alice", "app", "1.0.0")
    assert s.url == "http://127.0.0.1:8080/api/v0.1.0/alice/app/_tag/1.0.0"
    up = parse_spec("https://store.test/api/v0.1.0/alice/app/_tag/2.0.0")
    assert (up.kind, up.user, up.repo, up.tag, up.url) == (
        "drawbridge", "alice", "app", "2.0.0", "https://store.test/api/v0.1.0/alice/app/_tag/2.0.0")


@pytest.mark.parametrize("bad", [
    "alice/app", "h/alice/app:1.0", "h/alice/app:01.0.0", "h/al_ice/app:1.0.0",
    "h/alice/a.pp:1.0.0", "a/b/c/d:1.0.0", "bad host/u/r:1.0.0", "h:0/u/r:1.0.0",
    "h:99999/u/r:1.0.0", "h:/u/r:1.0.0", "ftp://x/y", "", "u/r:1.0.0\n", "[::1/u/r:1.0.0",
    "https://user:pw@h/u/r:1.0.0", "oci://h/Upper:1", "oci://h/name", "oci://h/n@sha256:xy",
    "oci://h/n:bad/tag", "oci://h", "file://", "https://h/x#frag",
])
def test_bad_specs_are_usage_errors_with_hints(bad: str) -> None:
    with pytest.raises(SpecError) as e:
        parse_spec(bad, default_host=None)
    assert e.value.exit_code == 2 and e.value.hint


def test_oci_specs() -> None:
    s = parse_spec("oci://127.0.0.1:5000/org/app:v1")
    assert (s.kind, s.scheme, s.host, s.name, s.tag, s.reference, s.url) == (
        "oci", "http", "127.0.0.1:5000", "org/app", "v1", "v1", "http://127.0.0.1:5000")
    r = parse_spec(f"oci://ghcr.example/org/app:v1@sha256:{D}")
    assert (r.scheme, r.tag, r.digest, r.reference) == ("https", "v1", f"sha256:{D}",
                                                       f"sha256:{D}")
    assert parse_spec("oci://[::1]:5000/a:1").scheme == "http"
    forced = parse_spec("oci+http://reg.lan:5000/a:1")
    assert (forced.scheme, forced.host) == ("http", "reg.lan:5000")


def test_urls_and_files() -> None:
    u = parse_spec("https://cdn.example/pkgs/app.wasm")
    assert (u.kind, u.scheme, u.url) == ("url", "https", "https://cdn.example/pkgs/app.wasm")
    assert parse_spec("file:///srv/pkg").path == Path("/srv/pkg")
    assert parse_spec("file://localhost/srv/pkg").path == Path("/srv/pkg")
    assert parse_spec("file://rel/pkg").path == Path("rel/pkg")
    assert parse_spec("./pkg").kind == "file"
    assert parse_spec("/abs/app.wasm").path == Path("/abs/app.wasm")


@pytest.mark.parametrize(("host", "loop"), [
    ("127.0.0.1", True), ("127.9.8.7:80", True), ("localhost:5000", True), ("LOCALHOST", True),
    ("[::1]:8080", True), ("[::ffff:127.0.0.1]", True), ("10.0.0.1", False),
    ("localhost.evil.example", False), ("127.0.0.1.nip.example", False), ("[::2]", False),
    ("0.0.0.0", False),
])
def test_loopback_rule(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop


def test_plain_http_needs_loopback_or_allow_insecure() -> None:
    for ok in ["http://127.0.0.1:1/u/r:1.0.0", "oci://localhost:5000/a:1",
               "https://far.example/u/r:1.0.0", "oci://far.example/a:1", "file:///x"]:
        check_transport(parse_spec(ok))
    for remote in ["http://far.example/u/r:1.0.0", "oci+http://far.example/a:1",
                   "http://far.example/app.wasm"]:
        with pytest.raises(InsecureTransport, match="plain HTTP") as e:
            check_transport(parse_spec(remote))
        assert "--allow-insecure" in (e.value.hint or "") and e.value.exit_code == 2
        assert check_transport(parse_spec(remote), allow_insecure=True).plain_http


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=120) | st.from_regex(
    r"(oci://|https?://|file://)?[a-z0-9.:\[\]]{0,20}/[A-Za-z0-9@:./_-]{0,60}", fullmatch=True))
def test_fuzz_parse_spec_raises_only_spec_errors(text: str) -> None:
    try:
        s = parse_spec(text, default_host="h.example")
    except SpecError:
        return
    check_transport(s, allow_insecure=True)
    assert s.kind in ("drawbridge", "oci", "url", "file")
