"""Networking of a VM Keep, host side: which NIC the VM gets and which ports reach it.

A VM Keep gets a network card only when its Enarx.toml has ``listen`` or ``connect`` entries
(or a steward or registry must be reached): QEMU user-mode networking (``-netdev user``,
no privileges, no host interfaces) on a ``virtio-net-pci`` device. Inside, the guest is
10.0.2.15/24, the gateway 10.0.2.2 is the host's 127.0.0.1 (:mod:`enarx.vm.guestnet`) and
10.0.2.3 the DNS forwarder.

- every ``listen`` entry (tcp and tls) is forwarded from the host address and port it names
  (``hostfwd=tcp:ADDR:PORT-:PORT``) to the same port in the VM, where the Keep listens and,
  for tls, terminates TLS: the host relays ciphertext only;
- a VM with listeners only is ``restrict=on``: it can answer the forwarded ports but reach
  neither the host nor anything else; ``connect`` entries (or ``outbound``) lift that;
- ports already in use are found before booting (:func:`check_ports`), and QEMU's own
  forwarding error is turned into the same message (:func:`qemu_error`).

:func:`qemu_args` and :func:`plan` are pure; :func:`check_ports` and
:func:`resolve_files` touch the host (sockets, files).
"""

from __future__ import annotations

import errno
import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from enarx.errors import ResourceError, UsageError
from enarx.vm import guestnet

if TYPE_CHECKING:
    from enarx.config import Source

__all__ = ["Forward", "NetSpec", "check_ports", "describe", "for_workload", "plan", "qemu_args",
           "qemu_error", "request", "resolve_files"]


@dataclass(frozen=True)
class Forward:
    """One listener: the host's ``host_addr:port`` forwarded to the VM's ``port``."""

    host_addr: str  # IPv4 (QEMU 7.2's hostfwd takes no IPv6)
    port: int
    prot: str  # "tcp" or "tls"
    where: str  # "files[3] (web)"
    #: the entry said ``port = 0``: ``port`` is a free one the host picked
    picked: bool = False


@dataclass(frozen=True)
class NetSpec:
    """The VM's NIC: its forwarded ports and whether it may open connections itself."""

    forwards: tuple[Forward, ...] = ()
    outbound: bool = False


def qemu_args(net: NetSpec) -> list[str]:
    """The ``-netdev``/``-device`` arguments for ``net`` (appended by qemu.command_line)."""
    opts = ["user", "id=net0", f"restrict={'off' if net.outbound else 'on'}"]
    opts += [f"hostfwd=tcp:{f.host_addr}:{f.port}-:{f.port}" for f in net.forwards]
    # romfile= : no iPXE option ROM (the kernel is booted directly; nothing to load or measure)
    return ["-netdev", ",".join(opts), "-device", "virtio-net-pci,netdev=net0,romfile="]


def plan(files: Sequence[Any] | None, *, outbound: bool = False,
         resolve: Any = None, pick: Any = None) -> NetSpec | None:
    """The NIC for a workload whose ``[[files]]`` are ``files``; None (no NIC) when it has no
    socket entries and ``outbound`` is False. ``resolve(name, where) -> IPv4`` turns a listen
    ``addr`` that is a name into an address, ``pick(addr) -> port`` chooses the port of a
    ``port = 0`` listener (defaults: the host's resolver, a free port of the host)."""
    forwards: list[Forward] = []
    connects = False
    seen: dict[int, str] = {}
    for index, f in enumerate(files or ()):
        kind = getattr(f, "kind", None)
        if kind == "connect":
            connects = True
        if kind != "listen":
            continue
        name = getattr(f, "name", None) or kind
        where = f"files[{index}] ({name})"
        port = f.effective_port
        if port in seen:
            raise UsageError(f"{where}: port {port} is already used by {seen[port]}",
                             hint="give each listener its own port")
        if port:
            seen[port] = where
        try:
            addr = guestnet.forward_addr(f.addr)
        except ValueError as e:
            raise UsageError(f"{where}: {e}", hint="listen on `::` (all addresses), "
                             "`0.0.0.0`, `::1`/`127.0.0.1` or an IPv4 address") from None
        if addr is None:
            addr = (resolve or _resolve4)(f.addr, where)
        picked = port == 0
        if picked:  # any free port: the host picks it, the VM listens on the same one
            port = int((pick or _free_port)(addr))
        forwards.append(Forward(host_addr=str(addr), port=port, prot=f.prot, where=where,
                                picked=picked))
    if not forwards and not connects and not outbound:
        return None
    return NetSpec(forwards=tuple(forwards), outbound=connects or outbound)


def _free_port(addr: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))
        return int(s.getsockname()[1])


def _resolve4(name: str, where: str) -> str:
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        infos = []
    if not infos:
        raise ResourceError(f"{where}: cannot use listen address {name!r}: no IPv4 address",
                            hint="give an IPv4 address such as 0.0.0.0 or 127.0.0.1")
    return str(infos[0][4][0])


_IN_USE_HINT = ("another program holds this port: stop it or pick a free port in Enarx.toml "
                "(`ss -ltnp` shows who holds it)")


def check_ports(net: NetSpec) -> None:
    """Refuse, before booting, a forwarded port the host cannot bind (in use, no such
    address, privileged)."""
    for f in net.forwards:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # as QEMU binds: SO_REUSEADDR lets old TIME_WAIT connections be, a listener not
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((f.host_addr, f.port))
            s.listen(1)
        except OSError as e:
            raise _bind_error(f, e.errno, e.strerror) from None
        finally:
            s.close()


def _bind_error(f: Forward, code: int | None, why: str | None) -> ResourceError:
    hint = {errno.EADDRINUSE: _IN_USE_HINT,
            errno.EADDRNOTAVAIL: "use an address this host has (`::` or `0.0.0.0` forward "
                                 "every IPv4 address)",
            errno.EACCES: "ports below 1024 need privileges: pick a port >= 1024"}.get(code or 0)
    return ResourceError(f"{f.where}: cannot forward {f.host_addr}:{f.port} into the VM Keep: "
                         f"{why or 'bind failed'}", hint=hint)


_QEMU_FWD = re.compile(r"Could not set up host forwarding rule 'tcp:([^:']*):(\d+)-")


def qemu_error(stderr: str, net: NetSpec | None) -> ResourceError | None:
    """QEMU's "could not set up host forwarding rule" (a port taken between our check and
    QEMU's bind) as the same error :func:`check_ports` gives; None for other errors."""
    m = _QEMU_FWD.search(stderr)
    if m is None or net is None:
        return None
    port = int(m.group(2))
    for f in net.forwards:
        if f.port == port:
            return _bind_error(f, errno.EADDRINUSE, "Address already in use")
    return ResourceError(f"cannot forward port {port} into the VM Keep", hint=_IN_USE_HINT)


def describe(net: NetSpec) -> list[str]:
    """What the host prints before booting: one line per forwarded port."""
    lines = []
    for f in net.forwards:
        what = ("TLS terminated inside the VM; the host relays ciphertext" if f.prot == "tls"
                else "plaintext tcp")
        lines.append(f"enarx: {f.where}: host {f.host_addr}:{f.port} -> VM Keep port "
                     f"{f.port} ({what})")
    return lines


def resolve_files(files: Sequence[Any] | None, base_dir: str) -> dict[str, str]:
    """The PEM files the socket entries name (``trust``, ``client_ca``), read on the host so
    the agent can write them at the same relative place inside the VM: key = the path as
    written in Enarx.toml."""
    out: dict[str, str] = {}
    for index, f in enumerate(files or ()):
        kind = getattr(f, "kind", None)
        names = ([f.client_ca] if kind == "listen" and f.client_ca else []) + \
                ([f.trust] if kind == "connect" and f.trust != "system" else [])
        for name in names:
            path = os.path.join(base_dir, os.path.expanduser(name))
            try:
                with open(path, encoding="utf-8") as fh:
                    out[name] = fh.read(1 << 20)
            except (OSError, UnicodeDecodeError) as e:
                why = getattr(e, "strerror", None) or "not a UTF-8 PEM file"
                raise ResourceError(f"files[{index}]: cannot read {name}: {why}",
                                    hint="give a readable PEM file (relative to Enarx.toml)"
                                    ) from None
    return out


def request(net: NetSpec, pem_files: Mapping[str, str]) -> dict[str, Any]:
    """The ``net`` key of the host -> agent request."""
    return {"host_loopback": guestnet.HOST_LOOPBACK, "ports": [f.port for f in net.forwards],
            "picked": {f.where: f.port for f in net.forwards if f.picked},
            "outbound": net.outbound, "files": dict(pem_files)}


def for_workload(source: Source | None, *,
                 outbound: bool = False) -> tuple[NetSpec | None, dict[str, Any]]:
    """``enarx run --backend kvm``: the NIC for an Enarx.toml (as the launcher parsed it; its
    path places relative PEM files) and the request keys to send. Refuses unusable ports
    before anything boots, then prints one line per forwarded port on stderr."""
    files = source.config.files if source is not None else None
    net = plan(files, outbound=outbound)
    if net is None:
        return None, {}
    check_ports(net)
    path = source.path if source is not None else None
    base = os.path.dirname(os.path.abspath(path)) if path else "."
    pem = resolve_files(files, base)
    import sys

    for line in describe(net):
        print(line, file=sys.stderr, flush=True)
    return net, {"net": request(net, pem)}
