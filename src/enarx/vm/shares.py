"""Pre-opened directories in a VM Keep: host directories shared into the VM over virtio-9p.

Host side (:func:`plan`): every ``--dir`` and Enarx.toml ``kind = "dir"`` entry is checked
before any boot (a missing directory, a file, a bad key file are clear errors) and each
distinct (host directory, read-only) pair becomes one :class:`Share` — a QEMU ``-fsdev
local`` (``readonly=on`` for ``:ro``, so QEMU itself refuses writes whatever the guest
does) plus a ``virtio-9p-pci`` device whose mount tag is ``enarxN``. Enarx.toml's ``dir``
entries are rewritten to name ``/mnt/enarx/N`` (guest paths, names and flags unchanged),
and ``--dir`` entries travel in the request's ``dirs`` key. Encrypted directories share
their ciphertext; the 32-byte key travels in the request (never written to the host's
disk by enarx) and the host holds the directory's lock while the VM runs.

Guest side (:func:`mount_all`, :func:`inner_dir_args`): the agent mounts each tag at
``/mnt/enarx/N`` (read-only for read-only shares), writes keys to its tmpfs work dir
(0600) and hands the inner ``enarx run --backend nil`` the matching ``--dir`` flags.
"""

from __future__ import annotations

import base64
import copy
import datetime
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from enarx.config import Source

__all__ = ["MAX_SHARES", "MOUNT_ROOT", "MSIZE", "HostShares", "Share", "inner_dir_args",
           "mount_all", "mount_point", "plan", "qemu_args", "qemu_escape", "toml_dumps",
           "write_keys"]

#: Where the agent mounts share N inside the VM.
MOUNT_ROOT = "/mnt/enarx"
#: 9p message size: the largest Linux 6.1's virtio transport takes (4 KiB x 125 ring slots);
#: larger values are clamped with a kernel message, smaller ones cost more round trips.
MSIZE = 512000
#: virtio-9p-pci devices take PCI slots on q35's root bus; more shares than this are refused.
MAX_SHARES = 16
_KEY_DIR = "keys"  # relative to the agent's work dir (tmpfs), where the inner run starts


@dataclass(frozen=True)
class Share:
    """One host directory shared into the VM: QEMU fsdev ``fs<index>``, mount tag ``tag``."""

    tag: str
    host: str
    readonly: bool


def mount_point(tag: str) -> str:
    """``/mnt/enarx/<N>`` for tag ``enarx<N>``."""
    return f"{MOUNT_ROOT}/{tag.removeprefix('enarx')}"


def qemu_escape(value: str) -> str:
    """``value`` as part of a QEMU option value: every ',' doubled (QEMU's own escape)."""
    return value.replace(",", ",,")


def qemu_args(shares: Sequence[Share]) -> list[str]:
    """The ``-fsdev``/``-device`` pairs for ``shares`` (pure)."""
    argv: list[str] = []
    for index, share in enumerate(shares):
        fsdev = f"local,id=fs{index},path={qemu_escape(share.host)},security_model=none"
        if share.readonly:
            fsdev += ",readonly=on"
        argv += ["-fsdev", fsdev,
                 "-device", f"virtio-9p-pci,fsdev=fs{index},mount_tag={share.tag}"]
    return argv


# --- host side --------------------------------------------------------------------------------


@dataclass
class HostShares:
    """What :func:`plan` decided: QEMU shares, the request's ``dirs``, the Enarx.toml text.

    Holds the locks of shared encrypted directories until :meth:`close` (use ``with``).
    """

    shares: tuple[Share, ...] = ()
    request: dict[str, Any] | None = None
    config: str | None = None
    _held: list[Any] = field(default_factory=list)

    def __enter__(self) -> HostShares:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        while self._held:
            held = self._held.pop()
            if isinstance(held, int):
                os.close(held)
            else:
                held.close()


class _Planner:
    def __init__(self) -> None:
        self.shares: list[Share] = []
        self.mounts: dict[tuple[str, bool], Share] = {}
        self.keys: list[str] = []
        self.out = HostShares()

    def share(self, host: str, readonly: bool, where: str) -> Share:
        from enarx.errors import ResourceError

        if not os.path.exists(host):
            raise ResourceError(
                f"{where}: pre-opened directory {host!r} does not exist",
                hint="create the directory, or fix the path (--dir or `host` in Enarx.toml)")
        if not os.path.isdir(host):
            raise ResourceError(
                f"{where}: {host!r} is not a directory",
                hint="--dir (and kind = \"dir\") takes a directory: pre-open the one holding "
                "the file and pass the guest the file's path inside it")
        if not os.access(host, os.R_OK | os.X_OK):
            raise ResourceError(f"{where}: cannot open directory {host!r}: permission denied",
                                hint="check the directory's owner and mode")
        real = os.path.realpath(host)
        found = self.mounts.get((real, readonly))
        if found is None:
            if len(self.shares) >= MAX_SHARES:
                raise ResourceError(
                    f"{where}: a VM Keep shares at most {MAX_SHARES} host directories",
                    hint="pre-open a common parent directory, or use --backend nil")
            found = Share(tag=f"enarx{len(self.shares)}", host=real, readonly=readonly)
            self.shares.append(found)
            self.mounts[(real, readonly)] = found
        return found

    def encrypted(self, host: str, key_file: str | None, readonly: bool, where: str) -> int | None:
        """Check an encrypted directory and hold its lock; the key's index in ``keys``."""
        from enarx.encdir import EncDir
        from enarx.errors import EnarxError

        try:
            if key_file is None:  # a steward resource: the inner run gets the key itself
                self.out._held.append(_lock_marker(host, readonly))
                return None
            from enarx.encdir.keyfile import read_key_file

            key = read_key_file(key_file)
            # Refuses a wrong key before any boot; holds the one-writer lock on the host
            # (9p does not carry the VM's flock to the host's file).
            self.out._held.append(EncDir.open(host, key, readonly=readonly))
        except EnarxError as e:
            e.message = f"{where}: {e.message}"
            e.args = (e.message,)
            raise
        self.keys.append(base64.b64encode(key).decode())
        return len(self.keys) - 1


def _lock_marker(host: str, readonly: bool) -> int:
    import fcntl

    from enarx.encdir import EncDirError
    from enarx.encdir.keys import MARKER_NAME

    try:
        fd = os.open(os.path.join(host, MARKER_NAME), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        raise EncDirError(f"{host} is not an encrypted directory (no {MARKER_NAME})",
                          hint="create it with `enarx dir encrypt SRC DST --key KEY`") from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise EncDirError(f"{host} is in use by another enarx process or pre-open",
                          hint="an encrypted directory can be opened read-write by one Keep "
                          "at a time (or read-only by several)") from None
    return fd


def plan(dirs: Sequence[Any], source: Source | None) -> HostShares:
    """Check every pre-open of ``enarx run --backend kvm`` and decide the shares (I/O).

    ``dirs`` are the ``--dir`` specs with absolute host (and key file) paths; Enarx.toml
    (``source``, as the launcher parsed it): its relative ``host`` and
    ``encryption_key_file`` resolve next to it, as on nil.
    """
    p = _Planner()
    try:
        if source is not None:
            p.out.config = _rewrite_config(p, source)
        extra = []
        for d in dirs:
            where = f"--dir {d.host}"
            share = p.share(d.host, d.readonly, where)
            key = None
            if d.encryption_key_file is not None:
                key = p.encrypted(d.host, d.encryption_key_file, d.readonly, where)
            extra.append({"tag": share.tag, "guest": d.guest_path, "readonly": d.readonly,
                          "key": key})
    except BaseException:
        p.out.close()
        raise
    p.out.shares = tuple(p.shares)
    if p.shares:
        p.out.request = {"mounts": [{"tag": s.tag, "readonly": s.readonly} for s in p.shares],
                         "keys": p.keys, "extra": extra}
    return p.out


def _rewrite_config(p: _Planner, source: Source) -> str:
    """Enarx.toml's text, its ``dir`` entries naming their shares' mount points instead of
    host paths (unchanged text when it has none). ``source`` is already validated."""
    files = source.data.get("files")
    if not isinstance(files, list) or not any(
            isinstance(f, dict) and f.get("kind") == "dir" for f in files):
        return source.text
    data = copy.deepcopy(source.data)  # the parsed data stays as read
    files = data["files"]
    base = os.path.dirname(os.path.abspath(source.path or "Enarx.toml"))
    for index, f in enumerate(files):
        if not (isinstance(f, dict) and f.get("kind") == "dir"):
            continue
        guest = f.get("guest") or f["host"]
        host = os.path.join(base, os.path.expanduser(f["host"]))
        where = f"files[{index}] ({f.get('name') or guest})"
        readonly = bool(f.get("readonly", False))
        share = p.share(host, readonly, where)
        if f.get("encryption_key_file") or f.get("encryption_key"):
            key_file = f.get("encryption_key_file")
            if key_file:
                key_file = os.path.join(base, os.path.expanduser(key_file))
            key = p.encrypted(host, key_file, readonly, where)
            if key is not None:
                f["encryption_key_file"] = f"{_KEY_DIR}/{key}.key"
        f["host"], f["guest"] = mount_point(share.tag), guest
    return toml_dumps(data)


def toml_dumps(data: dict[str, Any]) -> str:
    """TOML for what ``tomllib.loads`` returns: one ``"key" = value`` line per top-level key,
    tables inline (Enarx.toml after the host rewrote its ``dir`` entries)."""
    return "".join(f"{_key(k)} = {_value(v)}\n" for k, v in data.items())


def _key(key: str) -> str:
    return _string(key)


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"not a TOML value: {type(v).__name__}")  # pragma: no cover


# --- guest side (the agent) -------------------------------------------------------------------


def inner_dir_args(dirs: Any) -> list[str]:
    """``--dir`` flags for the inner ``enarx run`` from the request's ``dirs`` (pure)."""
    argv: list[str] = []
    for d in (dirs or {}).get("extra", []):
        spec = f"{mount_point(str(d['tag']))}::{d['guest']}"
        if d.get("key") is not None:
            spec += f":enc={_KEY_DIR}/{int(d['key'])}.key"
        if d.get("readonly"):
            spec += ":ro"
        argv += ["--dir", spec]
    return argv


def write_keys(dirs: Any, workdir: str) -> None:
    """The request's directory keys as ``<workdir>/keys/<i>.key`` (0600; tmpfs in the VM)."""
    keys = (dirs or {}).get("keys", [])
    if not keys:
        return
    os.makedirs(os.path.join(workdir, _KEY_DIR), mode=0o700, exist_ok=True)
    for index, key in enumerate(keys):
        fd = os.open(os.path.join(workdir, _KEY_DIR, f"{index}.key"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, base64.b64decode(key))
        finally:
            os.close(fd)


_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8


def mount_all(dirs: Any) -> None:
    """Mount every share of the request at :func:`mount_point` (OSError naming the tag)."""
    import ctypes

    mounts = (dirs or {}).get("mounts", [])
    if not mounts:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for m in mounts:
        tag = str(m["tag"])
        target = mount_point(tag)
        os.makedirs(target, exist_ok=True)
        flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC | (_MS_RDONLY if m.get("readonly") else 0)
        options = f"trans=virtio,version=9p2000.L,msize={MSIZE},cache=none"
        if libc.mount(tag.encode(), target.encode(), b"9p", flags, options.encode()) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot mount share {tag} at {target}: {os.strerror(err)}")
