"""Inside a VM Keep: where the host's loopback is, and how clients reach it.

On ``nil`` a Keep that connects to ``127.0.0.1``, ``localhost`` or ``::1`` reaches the host's
loopback. In a VM Keep (QEMU user-mode networking) the host's 127.0.0.1 is the gateway
10.0.2.2, so the agent sets ``ENARX_VM_HOST_LOOPBACK=10.0.2.2`` in the inner run's
environment and the Keep's clients dial that address instead — while the original name is
kept for everything else: TLS SNI and the certificate's name check, the HTTP ``Host``
header, messages. A host that is not a loopback name is never changed.

- :func:`dial_host` — the pure mapping (give it the environment value explicitly).
- :func:`connect_host` — the same, reading the environment (``keep/sockets.py``).
- :func:`httpx_transport` — an httpx transport for registry/steward clients, or None
  outside a VM Keep (then the client keeps its default transport).
- :func:`https_connection` — an ``http.client.HTTPSConnection`` that dials the mapped
  address and verifies the original name (the steward client).
- :func:`listen_addr`, :func:`listen_port` — where a listener binds inside the VM: the VM's
  own address (the host side of the port forward enforces the address named in
  Enarx.toml), and for ``port = 0`` the port the host picked and forwards;
  :func:`forward_addr` / :func:`shown_addr` — the host address of that forward.

No I/O at import; nothing here holds state.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import http.client

    import httpx

__all__ = [
    "GUEST_ADDR",
    "HOST_LOOPBACK",
    "HOST_LOOPBACK_ENV",
    "LISTEN_PORTS_ENV",
    "LOOPBACK_NAMES",
    "connect_host",
    "dial_host",
    "forward_addr",
    "host_loopback",
    "https_connection",
    "httpx_transport",
    "is_loopback",
    "listen_addr",
    "listen_port",
    "shown_addr",
]

#: Set by the VM agent in the inner run's environment: the address of the host's loopback.
HOST_LOOPBACK_ENV = "ENARX_VM_HOST_LOOPBACK"
#: QEMU user networking: the gateway, which forwards to the host's 127.0.0.1.
HOST_LOOPBACK = "10.0.2.2"
#: Set by the VM agent: JSON {"files[3] (web)": port} for ``port = 0`` listeners, whose port
#: the host picked (the forward's) so the VM must listen on exactly that one.
LISTEN_PORTS_ENV = "ENARX_VM_LISTEN_PORTS"
#: The guest's own address under QEMU user networking (what host port forwards reach).
GUEST_ADDR = "10.0.2.15"
#: Names that mean "this machine" and so, on nil, the host's loopback.
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name, an IP address, or a ``[v6]`` literal) is a loopback host."""
    h = host.strip("[]").lower()
    if h in LOOPBACK_NAMES or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _check_target(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{HOST_LOOPBACK_ENV}={value!r} is not an IP address") from None
    return value


def dial_host(host: str, loopback: str | None) -> str:
    """The address to dial for ``host``: ``loopback`` (the host's loopback as the VM sees it)
    when ``host`` is a loopback host and ``loopback`` is set, else ``host`` unchanged."""
    if loopback and is_loopback(host):
        return _check_target(loopback)
    return host


def host_loopback(environ: Mapping[str, str] | None = None) -> str | None:
    """The host loopback address the agent set, or None outside a VM Keep."""
    env = os.environ if environ is None else environ
    value = env.get(HOST_LOOPBACK_ENV, "").strip()
    return value or None


def connect_host(host: str) -> str:
    """:func:`dial_host` with the address from the environment (outside a VM: ``host``)."""
    return dial_host(host, host_loopback())


def listen_addr(addr: str, environ: Mapping[str, str] | None = None) -> str:
    """The address a listener binds: ``addr`` outside a VM Keep; inside one the VM's every
    IPv4 address, which is where QEMU's port forward (bound on the host to ``addr``)
    delivers connections."""
    return "0.0.0.0" if host_loopback(environ) else addr


def forward_addr(addr: str) -> str | None:
    """The host IPv4 address QEMU's port forward binds for a listener's ``addr``, or None when
    ``addr`` is not an IP literal (resolve it first). QEMU 7.2's ``hostfwd`` is IPv4 only, so
    ``::`` (every address) becomes ``0.0.0.0`` and ``::1`` becomes ``127.0.0.1``; another
    IPv6 address cannot be forwarded (ValueError)."""
    a = addr.strip("[]")
    if a in ("", "::", "0.0.0.0"):
        return "0.0.0.0"
    try:
        ip = ipaddress.ip_address(a)
    except ValueError:
        return None
    if ip.version == 4:
        return str(ip)
    if ip.is_loopback:
        return "127.0.0.1"
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    raise ValueError(f"cannot forward the IPv6 address {a} into a VM Keep")


def shown_addr(addr: str) -> str:
    """What a VM Keep's listener reports as its address: the host address the forward binds
    (:func:`forward_addr`), or ``addr`` itself when that cannot be told."""
    try:
        return forward_addr(addr) or addr
    except ValueError:
        return addr


def listen_port(where: str, port: int, environ: Mapping[str, str] | None = None) -> int:
    """The port a listener binds: ``port``, except a ``port = 0`` listener in a VM Keep, which
    binds the port the host picked and forwards (:data:`LISTEN_PORTS_ENV`, keyed by the
    entry's ``files[i] (name)``)."""
    if port != 0:
        return port
    env = os.environ if environ is None else environ
    try:
        picked = json.loads(env.get(LISTEN_PORTS_ENV) or "{}").get(where, 0)
    except (ValueError, AttributeError):
        return port
    return picked if isinstance(picked, int) and 0 < picked < 65536 else port


def https_connection(host: str, port: int | None, *, context: ssl.SSLContext,
                     timeout: float) -> http.client.HTTPSConnection:
    """An HTTPS connection to ``host``: in a VM Keep a loopback host is dialled at the host's
    loopback (10.0.2.2) and the certificate is still checked against ``host``."""
    import http.client  # lazily: keep/sockets.py imports this module on every socket run

    dial = connect_host(host)
    if dial == host:
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)

    class _MappedHTTPS(http.client.HTTPSConnection):
        """Dials ``dial`` but speaks TLS (SNI, certificate name check) for ``self.host``."""

        def connect(self) -> None:
            sock = socket.create_connection((dial, self.port), self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.sock = context.wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise

    return _MappedHTTPS(host, port, timeout=timeout, context=context)


def httpx_transport(verify: ssl.SSLContext | bool = True,
                    **kwargs: Any) -> httpx.BaseTransport | None:
    """An httpx transport that reaches loopback URLs at the host's loopback, or None outside
    a VM Keep. Use as ``httpx.Client(transport=httpx_transport(verify) or None, ...)``.

    Requests keep their URL's name for the ``Host`` header and for TLS (SNI and the
    certificate check); only the address dialled changes. ``kwargs`` go to
    ``httpx.HTTPTransport`` (which, not the client, then owns ``verify``)."""
    target = host_loopback()
    if target is None:
        return None
    import httpx

    class _LoopbackTransport(httpx.BaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.HTTPTransport(verify=verify, **kwargs)

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            host = request.url.host
            if is_loopback(host):
                # the Host header was fixed from the original URL when the request was built
                request.url = request.url.copy_with(host=dial_host(host, target))
                if request.url.scheme == "https":
                    request.extensions = {**request.extensions, "sni_hostname": host}
            return self.inner.handle_request(request)

        def close(self) -> None:
            self.inner.close()

    return _LoopbackTransport()
