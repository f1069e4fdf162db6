"""Package SPECs: where a package lives, as a user writes it.

Forms (docs/packages.md):

- ``[HOST/]USER/REPO:TAG`` — a drawbridge tag (USER ``[A-Za-z0-9]+``, REPO
  ``[A-Za-z0-9-]+``, TAG a semantic version), fetched over https from
  ``https://HOST/api/v0.1.0/USER/REPO/_tag/TAG``. Without HOST the caller's default host
  is used (the CLI reads ``ENARX_REGISTRY``); there is no built-in default registry.
- ``http[s]://HOST[:PORT]/USER/REPO:TAG`` — the same, with an explicit scheme; and an
  upstream tag URL ``http[s]://HOST/api/vX.Y.Z/USER/REPO/_tag/TAG`` is recognised as one.
- ``oci://HOST[:PORT]/NAME:TAG`` or ``oci://HOST/NAME@sha256:HEX`` — an OCI registry over
  https, or plain http when HOST is a loopback address; ``oci+http://`` asks for plain http
  anywhere (needs ``--allow-insecure`` unless loopback).
- any other ``https://`` / ``http://`` URL — a package document fetched as is.
- ``file://DIR`` (or a path starting with ``/``, ``./`` or ``../``) — a local directory or a
  single ``.wasm`` file.

Plain http is allowed to loopback hosts (127.0.0.0/8, ::1, ``localhost``); anywhere else
:func:`check_transport` refuses it unless ``allow_insecure``. Pure: no I/O, no DNS.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from enarx.package.errors import InsecureTransport, SpecError

__all__ = [
    "API_VERSION",
    "Spec",
    "SpecKind",
    "check_transport",
    "is_loopback",
    "parse_spec",
]

#: The drawbridge API version our clients speak (the path prefix ``/api/v0.1.0``).
API_VERSION = "0.1.0"

SpecKind = Literal["drawbridge", "oci", "url", "file"]

_USER_RE = re.compile(r"[A-Za-z0-9]{1,64}")
_REPO_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
# Semantic Versioning 2.0.0 (the official regular expression, without named groups).
_SEMVER_RE = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?")
_OCI_NAME_RE = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
_OCI_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_OCI_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_TAG_URL_RE = re.compile(r"/api/v([^/]+)/([^/]+)/([^/]+)/_tag/([^/]+)/?")
_MAX_SPEC = 2048


@dataclass(frozen=True)
class Spec:
    """A parsed SPEC. Which fields are set depends on ``kind``:

    - drawbridge: ``scheme``, ``host`` (``host[:port]``, IPv6 in brackets), ``user``,
      ``repo``, ``tag``; ``url`` is the tag URL.
    - oci: ``scheme``, ``host``, ``name``, ``tag`` and/or ``digest`` (``sha256:<hex>``);
      ``url`` is the registry base (``scheme://host``).
    - url: ``scheme``, ``host``, ``url``.
    - file: ``path``.
    """

    kind: SpecKind
    raw: str
    scheme: str = ""
    host: str = ""
    user: str = ""
    repo: str = ""
    tag: str = ""
    name: str = ""
    digest: str = ""
    url: str = ""
    path: Path | None = None

    @property
    def plain_http(self) -> bool:
        return self.scheme == "http"

    @property
    def loopback(self) -> bool:
        """The host is a loopback address (a file SPEC counts as local)."""
        return self.kind == "file" or is_loopback(self.host)

    @property
    def base_url(self) -> str:
        """``scheme://host`` (drawbridge: the registry root, before ``/api/v…``)."""
        return f"{self.scheme}://{self.host}" if self.host else ""

    @property
    def reference(self) -> str:
        """OCI: the digest if given, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        return self.raw


def parse_spec(text: str, *, default_host: str | None = None) -> Spec:
    """Parse ``text``; :class:`SpecError` (exit 2, with a hint) when it matches no form.

    ``default_host`` is used for ``USER/REPO:TAG``; it is a ``host[:port]`` or a base URL
    ``http[s]://host[:port]`` (the scheme rules then apply as for an explicit URL).
    """
    if not isinstance(text, str) or not text or len(text) > _MAX_SPEC:
        raise SpecError("empty or overlong package SPEC")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise SpecError(f"package SPEC {_show(text)} contains whitespace or control characters")
    if text.startswith("file://"):
        rest = text[len("file://"):]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        if not rest:
            raise SpecError(f"{_show(text)}: file:// needs a path")
        return Spec("file", text, path=Path(rest))
    if text.startswith(("/", "./", "../")):
        return Spec("file", text, path=Path(text))
    if text.startswith(("oci://", "oci+http://")):
        return _parse_oci(text)
    if text.startswith(("https://", "http://")):
        return _parse_url(text)
    if "://" in text:
        raise SpecError(f"{_show(text)}: unsupported scheme {text.split('://', 1)[0]!r}")
    return _parse_slug(text, default_host)


def _parse_slug(text: str, default_host: str | None) -> Spec:
    parts = text.split("/")
    if len(parts) == 3:
        scheme, host = "https", _check_host(parts[0], text)
        user, rest = parts[1], parts[2]
    elif len(parts) == 2:
        if not default_host:
            raise SpecError(f"{_show(text)} names no registry host",
                            hint="write HOST/USER/REPO:TAG, or set ENARX_REGISTRY to the "
                            "registry's host (or https:// base URL)")
        scheme, host = _default_host(default_host)
        user, rest = parts
    else:
        raise SpecError(f"{_show(text)} is not [HOST/]USER/REPO:TAG")
    return _drawbridge(text, scheme, host, user, rest)


def _default_host(value: str) -> tuple[str, str]:
    if value.startswith(("https://", "http://")):
        u = urlsplit(value)
        if u.path not in ("", "/") or u.query or u.fragment or u.username or u.password:
            raise SpecError(f"registry {_show(value)} must be a bare scheme://host[:port]")
        return u.scheme, _check_host(u.netloc, value)
    return "https", _check_host(value, value)


def _drawbridge(text: str, scheme: str, host: str, user: str, rest: str) -> Spec:
    repo, colon, tag = rest.partition(":")
    if not colon:
        raise SpecError(f"{_show(text)} has no :TAG",
                        hint="drawbridge tags are semantic versions, e.g. user/repo:1.0.0")
    if not _USER_RE.fullmatch(user):
        raise SpecError(f"{_show(text)}: user {user[:64]!r} is not [A-Za-z0-9]+")
    if not _REPO_RE.fullmatch(repo):
        raise SpecError(f"{_show(text)}: repository {repo[:64]!r} is not [A-Za-z0-9-]+")
    if len(tag) > 128 or not _SEMVER_RE.fullmatch(tag):
        raise SpecError(f"{_show(text)}: tag {tag[:64]!r} is not a semantic version",
                        hint="drawbridge tags are semantic versions like 1.0.0 or 0.2.1-rc.1")
    url = f"{scheme}://{host}/api/v{API_VERSION}/{user}/{repo}/_tag/{tag}"
    return Spec("drawbridge", text, scheme=scheme, host=host, user=user, repo=repo, tag=tag,
                url=url)


def _parse_url(text: str) -> Spec:
    try:
        u = urlsplit(text)
    except ValueError as e:
        raise SpecError(f"{_show(text)} is not a URL: {e}") from None
    if u.username is not None or u.password is not None:
        raise SpecError(f"{_show(text)}: credentials in the URL are refused",
                        hint="pass a token through ENARX_REGISTRY_TOKEN or a credential helper")
    host = _check_host(u.netloc, text)
    if u.fragment:
        raise SpecError(f"{_show(text)}: a URL fragment is not allowed")
    if not u.query:
        m = _TAG_URL_RE.fullmatch(u.path)
        if m is not None and _SEMVER_RE.fullmatch(m.group(1)):
            spec = _drawbridge(text, u.scheme, host, m.group(2), f"{m.group(3)}:{m.group(4)}")
            return Spec("drawbridge", text, scheme=spec.scheme, host=host, user=spec.user,
                        repo=spec.repo, tag=spec.tag, url=text)
        segs = u.path.split("/")
        if len(segs) == 3 and not segs[0] and ":" in segs[2]:
            return _drawbridge(text, u.scheme, host, segs[1], segs[2])
    return Spec("url", text, scheme=u.scheme, host=host, url=text)


def _parse_oci(text: str) -> Spec:
    scheme = "http" if text.startswith("oci+http://") else ""
    rest = text.split("://", 1)[1]
    hostpart, slash, ref = rest.partition("/")
    if not slash or not ref:
        raise SpecError(f"{_show(text)} is not oci://HOST[:PORT]/NAME:TAG")
    host = _check_host(hostpart, text)
    if not scheme:
        scheme = "http" if is_loopback(host) else "https"
    name, at, digest = ref.partition("@")
    tag = ""
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
    if not _OCI_NAME_RE.fullmatch(name) or len(name) > 255:
        raise SpecError(f"{_show(text)}: {name[:64]!r} is not an OCI repository name",
                        hint="OCI names are lower-case components like org/app, separated by '/'")
    if tag and not _OCI_TAG_RE.fullmatch(tag):
        raise SpecError(f"{_show(text)}: {tag[:64]!r} is not an OCI tag")
    if at and not _OCI_DIGEST_RE.fullmatch(digest):
        raise SpecError(f"{_show(text)}: {digest[:80]!r} is not a sha256:/sha512: digest")
    if not tag and not digest:
        raise SpecError(f"{_show(text)} names neither a tag nor a digest",
                        hint="write oci://HOST/NAME:TAG or oci://HOST/NAME@sha256:HEX")
    return Spec("oci", text, scheme=scheme, host=host, name=name, tag=tag, digest=digest,
                url=f"{scheme}://{host}")


def _check_host(netloc: str, text: str) -> str:
    """``host[:port]`` validated (DNS name, IPv4, or bracketed IPv6); returned as given."""
    host, port = netloc, ""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise SpecError(f"{_show(text)}: unterminated IPv6 address")
        host, rest = netloc[1:end], netloc[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise SpecError(f"{_show(text)}: {host[:64]!r} is not an IPv6 address") from None
        if rest and not rest.startswith(":"):
            raise SpecError(f"{_show(text)}: junk after the IPv6 address")
        port = rest[1:] if rest else ""
        if rest and not port:
            raise SpecError(f"{_show(text)}: empty port")
    else:
        host, colon, port = netloc.partition(":")
        if colon and not port:
            raise SpecError(f"{_show(text)}: empty port")
        if not _HOSTNAME_RE.fullmatch(host):
            raise SpecError(f"{_show(text)}: {host[:64]!r} is not a host name or address")
    if port and (not port.isdigit() or not port.isascii() or not 0 < int(port) < 65536):
        raise SpecError(f"{_show(text)}: {port[:16]!r} is not a port number")
    return netloc


def is_loopback(host: str) -> bool:
    """``host`` (``host[:port]``, IPv6 in brackets) is ``localhost``, in 127.0.0.0/8, ``::1``
    or an IPv4-mapped loopback address. Decided on the text alone (no DNS)."""
    if host.startswith("["):
        name = host[1:host.find("]")] if "]" in host else host[1:]
    else:
        name = host.partition(":")[0]
    if name.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def check_transport(spec: Spec, *, allow_insecure: bool = False) -> Spec:
    """``spec`` if its transport is acceptable: TLS, plain http to a loopback host, or plain
    http anywhere with ``allow_insecure``. Otherwise :class:`InsecureTransport` (exit 2)."""
    if spec.plain_http and not spec.loopback and not allow_insecure:
        raise InsecureTransport(
            f"{_show(spec.raw)} uses plain HTTP to {spec.host}, which is not a loopback address")
    return spec


def _show(text: str) -> str:
    return repr(text if len(text) <= 100 else text[:100] + "...")
