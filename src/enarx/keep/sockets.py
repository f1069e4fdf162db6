"""Open ``listen`` and ``connect`` entries of Enarx.toml before the workload starts.

An I/O edge: binds, listens and connects on the host's network stack, and sets up TLS
(terminated here, in the Keep) so the workload only ever sees plaintext fds.

Names in ``connect`` are resolved by the Keep with the system resolver (``getaddrinfo``):
every address it returns is tried in order until one connects. The resolver's answers come
from the untrusted host, so only ``prot = "tls"`` (the server's name checked against the
trust anchors) protects a connection from being redirected; see docs/network.md.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import sys

from enarx.config import ConnectFile, ListenFile
from enarx.errors import ResourceError
from enarx.keep import tls
from enarx.keep.tls import KeepIdentity
from enarx.vm import guestnet
from enarx.wasi.abi import WasiError
from enarx.wasi.fdtable import Handle
from enarx.wasi.sockets import TcpListener, TcpStream, TlsStream

__all__ = ["BACKLOG", "CONNECT_TIMEOUT", "open_entry"]

CONNECT_TIMEOUT = 10.0  # seconds per address, and for the TLS handshake
BACKLOG = 128


def open_entry(
    entry: ListenFile | ConnectFile,
    where: str,
    *,
    identity: KeepIdentity | None = None,
    base_dir: str = ".",
) -> Handle:
    """The fd handle for one ``[[files]]`` socket entry; ``where`` names it in messages.

    ``identity`` is the Keep's TLS identity for this run (required for ``prot = "tls"``).

    Relative ``client_ca``/``trust`` paths resolve against ``base_dir`` (Enarx.toml's
    directory), as ``dir`` entries do.
    """
    if entry.prot == "tcp":
        _say(f"warning: {where}: plaintext tcp — the host can read and change this traffic")
    if entry.prot == "tls" and identity is None:
        raise ValueError(f"{where}: a TLS entry needs the Keep's identity")
    if isinstance(entry, ListenFile):
        return _listen(entry, where, base_dir, identity)
    return _connect(entry, where, base_dir, identity)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _listen(
    entry: ListenFile, where: str, base_dir: str, ident: KeepIdentity | None
) -> Handle:
    # In a VM Keep the host's port forward binds entry.addr (and picks the port of a
    # `port = 0` listener); the VM listens on its own address, on the forwarded port.
    port = guestnet.listen_port(where, entry.effective_port)
    bind_addr = guestnet.listen_addr(entry.addr)
    try:
        infos = socket.getaddrinfo(
            bind_addr or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as e:
        raise ResourceError(
            f"{where}: cannot use listen address {entry.addr!r}: {e.strerror}",
            hint="give an IP address such as 0.0.0.0, ::, 127.0.0.1 or ::1",
        ) from None
    except (UnicodeError, ValueError) as e:  # e.g. an empty or over-long DNS label
        raise ResourceError(
            f"{where}: invalid listen address {entry.addr!r}: {e}",
            hint="give an IP address such as 0.0.0.0, ::, 127.0.0.1 or ::1",
        ) from None
    family, _type, proto, _canon, sockaddr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and sockaddr[0] == "::":
            # "::" (the default) means every address, IPv4 included.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        raise ResourceError(
            f"{where}: cannot listen on {_fmt(str(sockaddr[0]), port)}: {e.strerror}",
            hint={
                errno.EADDRINUSE: "another program holds this port: pick a free one "
                "(`port = 0` takes any free port; the bound one is printed)",
                errno.EADDRNOTAVAIL: "use an address this host has (`::` listens on all of them)",
            }.get(e.errno or 0),
        ) from None
    host, bound = sock.getsockname()[:2]
    if bind_addr != entry.addr:  # a VM Keep: name the host address the forward listens on
        host = guestnet.shown_addr(entry.addr)
    ctx = None
    if ident is not None and entry.prot == "tls":
        try:
            ca = None if entry.client_ca is None else _path(entry.client_ca, base_dir)
            ctx = tls.server_context(where, ident, ca)
        except BaseException:
            sock.close()
            raise
    _say(f"enarx: {where}: listening on {_fmt(host, bound)} ({entry.prot})")
    if ctx is not None and ident is not None:
        kind = "self-signed, one-time key" if ident.self_signed else "issued to this Keep"
        _say(f"enarx: {where}: certificate ({kind}) sha256 Fingerprint={ident.fingerprint()}")
        _say(f"enarx: {where}: public key pin {ident.spki_pin()}")
        if entry.client_ca is not None:
            _say(f"enarx: {where}: clients must present a certificate from {entry.client_ca}")
    return TcpListener(sock, ctx)


def _connect(
    entry: ConnectFile, where: str, base_dir: str, ident: KeepIdentity | None
) -> Handle:
    trust = entry.trust if entry.trust == "system" else _path(entry.trust, base_dir)
    ctx = (tls.client_context(where, ident, trust)
           if ident is not None and entry.prot == "tls" else None)
    sock = _dial(entry.host, entry.port, where, guestnet.connect_host(entry.host))
    if ctx is None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return TcpStream(sock)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return TlsStream.client(sock, ctx, entry.host, CONNECT_TIMEOUT)
    except ssl.SSLCertVerificationError as e:
        sock.close()
        raise ResourceError(
            f"{where}: the TLS server {_fmt(entry.host, entry.port)} is not trusted: "
            f"{e.verify_message}",
            hint="set `trust` to a PEM file holding its CA, or fix `host` to match its certificate"
            if entry.trust == "system"
            else "check that `trust` holds the CA that issued the server's certificate",
        ) from None
    except (ssl.SSLError, OSError, WasiError) as e:
        sock.close()
        raise ResourceError(
            f"{where}: TLS handshake with {_fmt(entry.host, entry.port)} failed: {e}",
            hint="check that the server speaks TLS 1.2 or 1.3 on that port",
        ) from None


def _dial(host: str, port: int, where: str, dial: str) -> socket.socket:
    """Connect to ``host`` at ``dial`` (``host`` itself, or the host's loopback as a VM Keep
    sees it: vm/guestnet.py)."""
    try:
        infos = socket.getaddrinfo(dial, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ResourceError(
            f"{where}: cannot resolve {host!r}: {e.strerror}",
            hint="check `host`; names are resolved by the Keep with the system resolver",
        ) from None
    except (UnicodeError, ValueError) as e:  # e.g. an empty or over-long DNS label
        raise ResourceError(
            f"{where}: invalid host name {host!r}: {e}",
            hint="check `host`: DNS labels are 1 to 63 bytes, separated by single dots",
        ) from None
    errors: list[str] = []
    for family, _type, proto, _canon, sockaddr in infos:
        sock = socket.socket(family, socket.SOCK_STREAM, proto)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(sockaddr)
        except OSError as e:
            sock.close()
            errors.append(f"{_fmt(str(sockaddr[0]), port)}: {e.strerror or 'timed out'}")
            continue
        return sock
    raise ResourceError(
        f"{where}: cannot connect to {_fmt(host, port)} ({'; '.join(errors)})",
        hint="start the server first, or fix `host`/`port` in Enarx.toml",
    )


def _path(path: str, base_dir: str) -> str:
    return os.path.join(base_dir, os.path.expanduser(path))


def _fmt(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
